"""One Serve replica: today's single-machine server (``create_app``) on one device, plus session leases.

The replica runs the unchanged app under uvicorn on a free port of its node (the gateway relays
WebSocket sessions to it; WebRTC media flows from this host straight to the browser). Every session
holds one long Serve request here for its whole life (``ws_lease`` / ``offer`` are generators), so
Serve's ``max_ongoing_requests`` = the replica's capacity is what routes, queues and autoscales.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from typing import Any, AsyncIterator

import httpx
import ray
import uvicorn
from ray.util import metrics as ray_metrics

from ..app import create_app
from ..httpserver import StreamgenServer
from ..settings import ServerSettings

log = logging.getLogger("streamgen.server.cluster.replica")
HEARTBEAT_S = 1.0  # how often a lease reports that its replica lives (the gateway notices a death by its end)
SHUTDOWN_S = 8.0  # within Serve's graceful_shutdown_timeout_s (10 s, launch.py)
READY_TIMEOUT_S = 900.0  # loading and warming a large model on a GPU can take minutes


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class StreamgenReplica:
    """The deployment class (``launch.build_app`` wraps it with ``serve.deployment``)."""

    async def __init__(self, server: dict[str, Any], host: str | None = None) -> None:
        host = host or ray.util.get_node_ip_address()
        self.settings = ServerSettings(**{**server, "host": host, "port": _free_port(host)})
        self.url = f"http://{host}:{self.settings.port}"
        self.name = ray.get_runtime_context().get_actor_name() or f"replica-{os.getpid()}"
        self.app = create_app(self.settings)
        self.state = self.app.state.streamgen
        config = uvicorn.Config(self.app, host=host, port=self.settings.port, log_level="warning", lifespan="on",
                                ws_ping_interval=self.settings.heartbeat_interval_s * 5,
                                ws_ping_timeout=self.settings.idle_timeout_s,
                                ws_max_size=max(1 << 20, self.settings.max_message_bytes * 4))
        self.server = StreamgenServer(config, self.app)  # sessions end with their bye before uvicorn's 1012
        self.thread = threading.Thread(target=self.server.run, name="streamgen-replica-uvicorn", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self.state.ready:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the replica server on {self.url} did not get ready (see the replica log)")
            await asyncio.sleep(0.05)
        self.http = httpx.AsyncClient(timeout=30.0)
        self._gauges = {
            "sessions": ray_metrics.Gauge("streamgen_replica_sessions", "Sessions streaming on this replica",
                                          tag_keys=("replica",)),
            "fps": ray_metrics.Gauge("streamgen_replica_fps", "Frames sent per second per session (last 5 s)",
                                     tag_keys=("replica",)),
            "block_p50_ms": ray_metrics.Gauge("streamgen_replica_block_p50_ms", "Median block generation time",
                                              tag_keys=("replica",)),
        }
        self._export = asyncio.ensure_future(self._export_metrics())
        log.info("replica %s serving %s on %s", self.name, self.settings.model_names, self.url)

    # ----- what the gateway asks ---------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        return {"replica": self.name, "url": self.url, "node": self.url.split("//")[1].rsplit(":", 1)[0],
                "pid": os.getpid(), "capacity": self.settings.max_sessions}

    async def describe(self) -> dict[str, Any]:
        """The models this replica streams (what ``/v1/models`` lists), and its identity."""
        return {**self.identity(), "default": self.settings.model,
                "models": [s.info().to_dict() for s in self.state.specs.values()]}

    async def ws_lease(self) -> AsyncIterator[dict[str, Any]]:
        """Hold one session slot while the gateway relays a WebSocket session to ``url``: the first item
        says where to connect, then one heartbeat a second until the gateway cancels the lease."""
        yield self.identity()
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            yield {"alive": True}

    async def offer(self, body: bytes, authorization: str | None) -> AsyncIterator[dict[str, Any]]:
        """Answer a WebRTC offer with this replica's server, then hold the slot until that session ends."""
        headers = {"content-type": "application/json"}
        if authorization:
            headers["authorization"] = authorization
        r = await self.http.post(self.url + "/v1/offer", content=body, headers=headers)
        yield {**self.identity(), "status": r.status_code, "body": r.content,
               "retry_after": r.headers.get("retry-after")}
        if r.status_code != 200:
            return
        session = self.state.manager.sessions.get(r.json().get("session_id"))
        while session is not None and not session.closed:
            await asyncio.sleep(HEARTBEAT_S)
            yield {"alive": True}
        yield {"ended": session.close_reason if session is not None else "unknown"}

    def check_health(self) -> None:
        """Serve calls this every few seconds; raising makes Serve replace the replica."""
        engine = self.state.engine
        if not self.thread.is_alive() or engine is None or not engine.alive:
            raise RuntimeError(f"replica {self.name}: the server thread or its engine has stopped")

    # ----- metrics through Ray ----------------------------------------------------------------------
    async def _export_metrics(self) -> None:
        tags = {"replica": self.name}
        while True:
            snap = self.state.metrics.snapshot()
            self._gauges["sessions"].set(self.state.manager.in_use() if self.state.manager else 0, tags)
            self._gauges["fps"].set(snap["fps_per_session"], tags)
            if snap["block_ms"]["p50"] is not None:
                self._gauges["block_p50_ms"].set(snap["block_ms"]["p50"], tags)
            await asyncio.sleep(5.0)

    def __del__(self) -> None:
        """Serve stops the replica: the server's lifespan ends its sessions with ``bye`` ``shutdown``."""
        server = getattr(self, "server", None)
        if server is not None:
            server.should_exit = True
            self.thread.join(SHUTDOWN_S)
