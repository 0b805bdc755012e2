"""The cluster's one endpoint: a FastAPI ingress deployment in front of the replicas.

It serves the same page and routes as a single server. A new session joins the wait queue and asks
Serve for a lease (``ws_lease`` / ``offer`` on :class:`~.replica.StreamgenReplica`); Serve hands the
request to a replica with room, or holds it until one frees. WebSocket sessions are relayed to their
replica (:mod:`.relay`); a WebRTC offer is answered by its replica, whose host then sends the media.
"""
from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import generate_latest

from ..app import STATIC
from ..security import check_token
from . import relay
from .config import ClusterConfig
from .core import GatewayCore


def build_gateway_app(core: GatewayCore) -> FastAPI:
    app = FastAPI(title="streamgen cluster", version="0.1.0",
                  description="Real-time streaming generation on a Ray Serve cluster (docs/deploy.md).")
    app.state.gateway = core
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/healthz", tags=["ops"], summary="The gateway is up")
    async def healthz() -> dict:
        return {"status": "ok", "replicas": await core.refresh()}

    @app.get("/readyz", tags=["ops"], summary="At least one replica runs and its models are known")
    async def readyz() -> JSONResponse:
        running = await core.refresh()
        ok = running > 0 and await core.describe() is not None
        return JSONResponse({"ready": ok, "replicas": running}, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics of the gateway (replicas: Ray's metrics)")
    async def metrics() -> Response:
        await core.refresh()
        return Response(generate_latest(core.metrics.registry), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models", tags=["session"], summary="Models the cluster streams, its capacity and sessions")
    async def models() -> dict:
        running = await core.refresh()
        d = await core.describe() or {}
        return {
            "default": d.get("default", core.settings.model),
            "models": d.get("models", []),
            "max_sessions": core.capacity(),
            "sessions": len(core.leases),
            "auth": bool(core.settings.auth_token),
            "cluster": {"replicas": running, "sessions_per_replica": core.per_replica, "capacity": core.capacity(),
                        "sessions": len(core.leases), "queued": len(core.queue), "by_replica": core.by_replica(),
                        "replica_lost_sessions": core.lost_total},
        }

    @app.get("/v1/cluster", tags=["ops"], summary="Where each session streams (replica, node, transport)")
    async def cluster(request: Request) -> Response:
        why = check_token(request, core.settings)
        if why:
            return JSONResponse({"error": why}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        running = await core.refresh()
        return JSONResponse({"replicas": running, "capacity": core.capacity(), "queued": len(core.queue),
                             "sessions": core.placement()})

    @app.get("/v1/sessions/{session_id}", tags=["session"],
             summary="A session's state; after it ended, why (e.g. replica_lost: reconnect for a new one)")
    async def session_state(session_id: str) -> JSONResponse:
        state = core.session_state(session_id)
        if state is None:
            return JSONResponse({"session_id": session_id[:64], "state": "unknown"}, status_code=404)
        return JSONResponse(state)

    @app.post("/v1/offer", tags=["webrtc"], summary="WebRTC signalling, answered by a replica with room")
    async def offer(request: Request) -> Response:
        return await relay.offer(core, request)

    @app.websocket("/v1/ws")
    async def ws_endpoint(ws: WebSocket) -> None:
        await relay.websocket(core, ws)

    return app


class Gateway:
    """The ingress deployment class (``launch.build_app`` wraps it with ``serve.ingress``)."""

    def __init__(self, replicas: Any, config: dict[str, Any]) -> None:
        self.core = GatewayCore(replicas, ClusterConfig.from_dict(config))

    def __serve_build_asgi_app__(self) -> FastAPI:
        return build_gateway_app(self.core)
