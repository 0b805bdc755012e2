"""The FastAPI app: ``create_app(settings)``.

Routes: ``/`` (the web page), ``/static/*``, ``POST /v1/offer`` (WebRTC), ``/v1/ws`` (WebSocket),
``GET /v1/models``, ``GET /v1/identities`` (avatars), ``GET /v1/stats``, ``/healthz``, ``/readyz``,
``/metrics``, and the OpenAPI docs at ``/docs``. The lifespan loads the pipelines, starts the engine thread
and warms it up; ``/readyz`` answers 200 only after that, and the warm-up's step times (batches of ``warmup_batch_sizes``
sessions) seed the measured capacity (server/capacity.py). Middleware: HostGuard (DNS rebinding), CORS for ``allowed_origins``, and the
token check of the ops routes when ``ops_require_token`` is set. Credentials never reach the logs.
"""
from __future__ import annotations

import asyncio
import logging
import re
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from . import audio_level, avatar_identities, webrtc, ws
from .capacity import warmup_estimate
from .engine import Engine
from .metrics import Metrics
from .security import HostGuard, check_token, install_log_redaction
from .model_spec import ModelSpec
from .sessions import SessionManager
from .settings import ServerSettings

log = logging.getLogger("streamgen.server")
STATIC = Path(__file__).parent / "static"


@dataclass
class AppState:
    settings: ServerSettings
    metrics: Metrics = field(default_factory=Metrics)
    engine: Engine | None = None
    manager: SessionManager | None = None
    specs: dict[str, ModelSpec] = field(default_factory=dict)
    ready: bool = False
    load_s: float | None = None
    warmup_s: float | None = None
    error: str | None = None
    runtime: dict[str, dict] = field(default_factory=dict)
    identities: dict[str, list] = field(default_factory=dict)  # avatars' shipped faces (avatar_identities.py)


_RUNTIME_KEYS = ("device", "dtype", "attention_backend", "compiled", "acceleration", "family", "streaming", "decoder",
                 "text_encoder", "image_encoder", "lora")


def _runtime(described: dict) -> dict:
    """The part of ``Pipeline.describe()`` that says how a model runs (not what it streams)."""
    return {k: described[k] for k in _RUNTIME_KEYS if k in described}


def _load(settings: ServerSettings) -> tuple[dict, str]:
    import torch  # heavy: imported when the app starts, not when the module is

    import streamgen

    device = settings.device or streamgen.pipeline.default_device()
    dtype = getattr(torch, settings.dtype) if settings.dtype else None
    pipes = {}
    for name in settings.model_names:
        pipe = streamgen.load_pipeline(name, device=device, dtype=dtype, attention_backend=settings.attention,
                                       compile=settings.compile, base=settings.base, decoder=settings.decoder,
                                       start_image=settings.start_image, image_embeds=settings.image_embeds,
                                       quantize=settings.quantize, feature_cache=settings.feature_cache)
        served = served_name(name, pipe.name)
        if served in pipes:
            raise ValueError(f"model {name!r} would be served as {served!r}, which another model already is; rename its folder")
        pipes[served] = pipe
    return pipes, device


def served_name(name: str, pipe_name: str) -> str:
    """The name clients start a model by: ``name`` itself (a preset or shipped default), or for a folder /
    file path the pipeline's name (its folder or file name), made a protocol name (``[A-Za-z0-9_.-]``, 64)."""
    if re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", name):
        return name
    return re.sub(r"[^A-Za-z0-9_.\-]", "-", pipe_name)[:64] or "model"


def create_app(settings: ServerSettings | None = None) -> FastAPI:
    settings = settings or ServerSettings()
    state = AppState(settings=settings)

    install_log_redaction()
    audio_level.install()  # aiortc's per-packet audio level in numpy (server/audio_level.py)

    def block_done(model: str, info) -> None:  # engine thread
        state.metrics.block_done(model, info.step_s)

    def batch_done(model: str, sessions: int, step_s: float, joining: int) -> None:  # engine thread, every step
        if state.manager is not None:
            state.manager.capacity.observe(model, step_s, sessions, joining)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        install_log_redaction()  # again: uvicorn has configured its loggers and handlers by now
        t0 = time.perf_counter()
        pipelines, device = await asyncio.to_thread(_load, settings)
        state.load_s = time.perf_counter() - t0
        state.specs = {name: ModelSpec.from_pipeline(name, p) for name, p in pipelines.items()}
        state.runtime = {name: _runtime(p.describe()) for name, p in pipelines.items()}
        state.identities = avatar_identities.load_all(zip(settings.model_names, pipelines))  # _load keeps the order
        state.engine = Engine(pipelines, device=device, on_block_metrics=block_done, on_batch=batch_done,
                              max_batch=settings.max_batch)
        state.engine.start()
        state.manager = SessionManager(settings, state.engine, state.metrics, state.specs)
        state.manager.start_reaper()
        try:
            t1 = time.perf_counter()
            for name in pipelines:
                for k in settings.warmup_batch_sizes if settings.warmup_blocks else []:
                    if settings.max_batch is not None and k > settings.max_batch:
                        continue
                    times = await asyncio.to_thread(state.engine.warmup, name, settings.warmup_blocks, k)
                    state.manager.capacity.seed(name, warmup_estimate(times), k)
            state.warmup_s = time.perf_counter() - t1
            state.ready = True
            state.metrics.ready.set(1)
            log.info("streamgen ready: %s on %s (load %.2f s, warm-up %.2f s)", settings.model_names, device,
                     state.load_s, state.warmup_s)
            yield
        finally:
            state.ready = False
            state.metrics.ready.set(0)
            await state.manager.shutdown()
            await asyncio.to_thread(state.engine.stop)

    docs = {} if not settings.ops_require_token else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(title="streamgen", version="0.1.0", lifespan=lifespan, **docs,
                  description="Real-time streaming generation: WebRTC and WebSocket sessions (docs/protocol.md).")
    app.state.streamgen = state
    # Starlette runs the middleware added last first: HostGuard sees every request before CORS does.
    if settings.allowed_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.allowed_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"], max_age=600)
    app.add_middleware(HostGuard, settings=settings)
    app.include_router(webrtc.router)
    app.include_router(ws.router)
    app.include_router(avatar_identities.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def ops_auth(request: Request) -> None:
        """The ops routes' guard: a no-op unless ops_require_token is set (docs/serving.md)."""
        if settings.ops_require_token:
            why = check_token(request, settings)
            if why:
                raise HTTPException(401, why, headers={"WWW-Authenticate": "Bearer"})
    ops = [Depends(ops_auth)]

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/healthz", tags=["ops"], summary="The process is up")
    async def healthz() -> dict:
        return {"status": "ok", "engine_alive": bool(state.engine and state.engine.alive)}

    @app.get("/readyz", tags=["ops"], summary="The pipelines are loaded and warmed up")
    async def readyz() -> JSONResponse:
        ok = state.ready and state.engine is not None and state.engine.alive
        return JSONResponse({"ready": ok, "load_s": state.load_s, "warmup_s": state.warmup_s},
                            status_code=200 if ok else 503)

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics", dependencies=ops)
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models", tags=["session"], summary="Models this server streams, and its limits", dependencies=ops)
    async def models() -> dict:
        manager = state.manager
        return {
            "default": next(iter(state.specs), settings.model),  # settings.model, as clients name it
            "models": [{**s.info().to_dict(), **(manager.capacity.describe(n) if manager else {})}
                       for n, s in state.specs.items()],
            "max_sessions": settings.max_sessions,  # None: admission by measured capacity
            "capacity_utilization": settings.capacity_utilization,
            "sessions": manager.in_use() if manager else 0,
            "auth": bool(settings.auth_token),
            # How each model runs: attention backend, dtype, compile, acceleration (int8, feature cache), family
            # and its streaming settings, decoder.
            "runtime": state.runtime,
        }

    @app.get("/v1/stats", tags=["ops"], summary="Recent server-side timings (p50/p95) and frame rate",
             dependencies=ops)
    async def stats() -> dict:
        snap = state.metrics.snapshot()
        snap["engine_steps"] = state.engine.steps if state.engine else 0
        # batch size -> batched steps of that size (the engine steps each model's due sessions together)
        snap["engine_batches"] = {str(k): n for k, n in sorted(state.engine.batches.items())} if state.engine else {}
        return snap

    return app
