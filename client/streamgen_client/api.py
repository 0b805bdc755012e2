"""``connect()``: one entry point for both transports."""
from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

from .base import StreamClient
from .urls import http_endpoint

TRANSPORTS = ("ws", "webrtc")


def default_model(url: str, token: str | None = None, timeout: float = 10.0) -> str:
    """The model a server streams by default (``GET /v1/models``)."""
    req = urllib.request.Request(http_endpoint(url, "/v1/models"))
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 (URL is the user's server)
        return json.loads(r.read())["default"]


async def connect(url: str, *, transport: str = "ws", model: str | None = None, seed: int = 0,
                  prompt: str | None = None, options: dict[str, Any] | None = None,
                  token: str | None = None, timeout: float = 30.0, **kw: Any) -> StreamClient:
    """Open a session on the server at ``url`` (``http://host:port``) and wait for ``started``.

    ``transport``: ``"ws"`` (WebSocket ``/v1/ws``) or ``"webrtc"`` (``POST /v1/offer``, needs aiortc).
    ``model``: a model the server streams; None asks the server for its default.
    Raises ``BusyError`` when the server has no free slot, ``ServerError`` for other refusals.
    """
    if model is None:
        model = await asyncio.to_thread(default_model, url, token, min(timeout, 10.0))
    if transport == "ws":
        from .ws_client import WSClient

        return await WSClient.open(url, model=model, seed=seed, prompt=prompt, options=options,
                                   token=token, timeout=timeout, **kw)
    if transport == "webrtc":
        try:
            from .webrtc_client import WebRTCClient
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ImportError("transport 'webrtc' needs aiortc: pip install 'streamgen-client[webrtc]'") from e
        return await WebRTCClient.open(url, model=model, seed=seed, prompt=prompt, options=options,
                                       token=token, timeout=timeout, **kw)
    raise ValueError(f"transport {transport!r} is not one of {TRANSPORTS}")
