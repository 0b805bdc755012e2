"""The cluster's knobs: a ``ClusterConfig`` dataclass (also the ``args`` of a Serve config YAML).

It holds only what the single-machine server has no notion of (replicas, placement, the wait queue);
each replica's own server reads ``ServerSettings`` (the ``server`` mapping, or ``STREAMGEN_*``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(kw_only=True)
class ClusterConfig:
    # Replicas when not autoscaling: two shows routing and failover; raise it to the GPUs you have.
    replicas: int = 2
    # Autoscaling on sessions in use: None keeps ``replicas`` fixed; set both to scale between them.
    min_replicas: int | None = None
    max_replicas: int | None = None
    # Autoscaling aims at this share of a replica's sessions in use: below 1 so a new user rarely waits
    # for a replica to start (a cold start loads and warms the model: tens of seconds on a GPU).
    target_load: float = 0.75
    # A new replica loads and warms its model before it takes sessions: ask for it soon after sessions
    # wait (Serve's default is 30 s). Let a replica go only after ten quiet minutes: sessions come in waves.
    upscale_delay_s: float = 5.0
    downscale_delay_s: float = 600.0
    # One device per replica: 1 on GPU nodes (the engine drives exactly one device); 0 for CPU replicas.
    num_gpus: float = 0.0
    # CPU share Ray books per replica; 1 lets a CPU replica use one core for its engine thread.
    num_cpus: float = 1.0
    # Sessions a replica streams at full rate; None: the replica server's ``max_sessions``.
    sessions_per_replica: int | None = None
    # Clients waiting for a slot when every replica is full; beyond it a new client gets ``busy`` at once.
    max_queued: int = 16
    # How long a queued client waits before ``busy``: a couple of typical session turnovers.
    queue_timeout_s: float = 60.0
    # A queued WebSocket client is told its position this often (a ``telemetry`` with zero frames).
    queue_report_s: float = 1.0
    # The Serve application's name and the ingress route (``serve status`` shows them).
    app_name: str = "streamgen"
    route_prefix: str = "/"
    # Where each replica's own server listens (the gateway relays WebSocket sessions to it): None is the
    # node's address, which a gateway on another node can reach; a one-machine cluster uses 127.0.0.1.
    replica_host: str | None = None
    # ServerSettings fields for every replica (model, max_sessions, auth_token...), on top of STREAMGEN_*.
    server: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError(f"replicas={self.replicas} must be >= 1")
        if (self.min_replicas is None) != (self.max_replicas is None):
            raise ValueError(f"min_replicas={self.min_replicas} and max_replicas={self.max_replicas}: "
                             "set both to autoscale, or neither")
        if self.min_replicas is not None and not 0 <= self.min_replicas <= self.max_replicas:
            raise ValueError(f"min_replicas={self.min_replicas} must be in [0, max_replicas={self.max_replicas}]")
        if self.max_replicas is not None and self.max_replicas < 1:
            raise ValueError(f"max_replicas={self.max_replicas} must be >= 1")
        if self.upscale_delay_s < 0 or self.downscale_delay_s < 0:
            raise ValueError(f"upscale_delay_s={self.upscale_delay_s} and downscale_delay_s={self.downscale_delay_s} "
                             "must be >= 0")
        if not 0.0 < self.target_load <= 1.0:
            raise ValueError(f"target_load={self.target_load} must be in (0, 1]")
        if self.sessions_per_replica is not None and self.sessions_per_replica < 1:
            raise ValueError(f"sessions_per_replica={self.sessions_per_replica} must be >= 1")
        if self.max_queued < 0:
            raise ValueError(f"max_queued={self.max_queued} must be >= 0")
        if self.queue_timeout_s <= 0 or self.queue_report_s <= 0:
            raise ValueError(f"queue_timeout_s={self.queue_timeout_s} and queue_report_s={self.queue_report_s} "
                             "must be > 0")

    @property
    def autoscaling(self) -> bool:
        return self.min_replicas is not None

    @classmethod
    def from_dict(cls, args: dict[str, Any]) -> "ClusterConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(args) - known)
        if unknown:
            raise ValueError(f"unknown cluster option(s) {unknown}; known: {sorted(known)}")
        return cls(**args)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def add_arguments(parser) -> None:
    """``streamgen serve``'s cluster options (argparse); nothing here imports Ray."""
    g = parser.add_argument_group("cluster (Ray Serve, docs/deploy.md; needs the streamgen[cluster] extra)")
    g.add_argument("--cluster", metavar="ADDRESS",
                   help="serve on a Ray cluster: its address (e.g. 10.0.0.5:6379), or 'auto' to start a local one")
    g.add_argument("--replicas", type=int, help=f"replicas, one device each (default {ClusterConfig.replicas})")
    g.add_argument("--max-replicas", type=int,
                   help="autoscale on sessions in use between --replicas and this many replicas")
    g.add_argument("--gpus-per-replica", type=float, help="1 on GPU nodes (default 0: CPU replicas)")
    g.add_argument("--max-queued", type=int,
                   help=f"clients that may wait for a slot (default {ClusterConfig.max_queued})")


def misplaced(args) -> list[str]:
    """Cluster options given without ``--cluster`` (they would do nothing)."""
    names = ("replicas", "max_replicas", "gpus_per_replica", "max_queued")
    return ["--" + n.replace("_", "-") for n in names if getattr(args, n, None) is not None]


def from_args(args, server: dict[str, Any]) -> ClusterConfig:
    """The ClusterConfig of parsed ``streamgen serve`` options; ``server``: every replica's ServerSettings."""
    given: dict[str, Any] = {"server": server}
    if args.replicas is not None:
        given["replicas"] = args.replicas
    if args.max_replicas is not None:
        given["min_replicas"], given["max_replicas"] = given.get("replicas", ClusterConfig.replicas), args.max_replicas
    if args.gpus_per_replica is not None:
        given["num_gpus"] = args.gpus_per_replica
    if args.max_queued is not None:
        given["max_queued"] = args.max_queued
    return ClusterConfig(**given)
