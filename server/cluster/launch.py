"""Build the Serve application, and run it (``streamgen serve --cluster``, ``serve run``, a config YAML).

``build_app(config)`` returns the bound application: the ``StreamgenReplica`` deployment (one device
each, ``max_ongoing_requests`` = sessions per replica, fixed or autoscaled on sessions in use) behind
the ``Gateway`` ingress. ``app_builder`` is the same for Serve's own tools:
``serve run streamgen.server.cluster.launch:app_builder replicas=2`` or ``import_path`` in a YAML.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import ray
from ray import serve

from ..settings import UNMEASURED_SESSIONS, ServerSettings
from .config import ClusterConfig
from .core import REPLICA_DEPLOYMENT
from .gateway import Gateway
from .replica import StreamgenReplica

log = logging.getLogger("streamgen.server.cluster")
# Every session is one request at the gateway for its whole life: the gateway itself is never the limit.
GATEWAY_MAX_ONGOING = 100_000
START_ATTEMPTS = 3  # a loaded machine can miss Ray's fixed 30 s start-up window once
OBJECT_STORE_BYTES = 200 * 1024 * 1024  # leases and answers are small; Ray's default (30 % of RAM) is not


def build_app(config: ClusterConfig):
    per_replica = config.sessions_per_replica or ServerSettings(**config.server).max_sessions or UNMEASURED_SESSIONS
    server = {**config.server, "max_sessions": per_replica}
    options: dict[str, Any] = {
        "name": REPLICA_DEPLOYMENT,
        "max_ongoing_requests": per_replica,  # one request per session: Serve routes by free session slots
        "ray_actor_options": {"num_cpus": config.num_cpus, "num_gpus": config.num_gpus},
        "graceful_shutdown_timeout_s": 10,
    }
    if config.autoscaling:
        options["autoscaling_config"] = {
            "min_replicas": config.min_replicas, "max_replicas": config.max_replicas,
            "target_ongoing_requests": max(1.0, per_replica * config.target_load),
            "upscale_delay_s": config.upscale_delay_s, "downscale_delay_s": config.downscale_delay_s,
        }
    else:
        options["num_replicas"] = config.replicas
    replicas = serve.deployment(StreamgenReplica, **options).bind(server, config.replica_host)
    gateway = serve.deployment(serve.ingress()(Gateway), name="Gateway", max_ongoing_requests=GATEWAY_MAX_ONGOING,
                               ray_actor_options={"num_cpus": 0})
    return gateway.bind(replicas, {**config.to_dict(), "server": server})


def app_builder(args: dict[str, Any]):
    """Serve's application-builder hook: ``args`` are ClusterConfig fields."""
    return build_app(ClusterConfig.from_dict(dict(args)))


def start_local_ray(num_cpus: int | None = None) -> None:
    """A Ray of this machine only, in this process: no dashboard, a modest object store. Ray's own services
    still listen on the machine's address (guarded by Ray's token auth); replicas use ``replica_host``."""
    for attempt in range(START_ATTEMPTS):
        try:
            ray.init(num_cpus=num_cpus, include_dashboard=False, object_store_memory=OBJECT_STORE_BYTES,
                     namespace="streamgen", log_to_driver=False)
            return
        except Exception as e:  # noqa: BLE001 - Ray gives its raylet a fixed 30 s to register
            ray.shutdown()
            if attempt + 1 == START_ATTEMPTS:
                raise
            log.warning("starting the local Ray failed (%s); trying again", e)


def deploy(config: ClusterConfig, host: str, port: int) -> None:
    """Start Serve's HTTP proxy on ``host:port`` and deploy (Ray must be initialised)."""
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(config), name=config.app_name, route_prefix=config.route_prefix, blocking=False)


def serve_cluster(address: str, settings: ServerSettings, config: ClusterConfig) -> int:
    """``streamgen serve --cluster ADDRESS``: join (or, with ``auto``, start) a Ray cluster and serve."""
    if address == "auto":
        start_local_ray()
        config = dataclasses.replace(config, replica_host=config.replica_host or "127.0.0.1")
    else:
        ray.init(address=address, namespace="streamgen")
    try:
        deploy(config, settings.host, settings.port)
        log.info("streamgen cluster serving on http://%s:%d/ (serve status shows the replicas)", settings.host,
                 settings.port)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        serve.shutdown()
        ray.shutdown()
