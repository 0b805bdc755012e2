"""streamgen_client: a light (torch-free) Python client for the streamgen server.

``protocol`` needs only the standard library; the clients need numpy, websockets and PyAV, and the
WebRTC transport needs aiortc (``pip install 'streamgen-client[webrtc]'``). Names are imported lazily
so that ``import streamgen_client.protocol`` stays light.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "connect": "api", "TRANSPORTS": "api",
    "StreamClient": "base", "ServerError": "base", "BusyError": "base", "StreamEnded": "base",
    "KeyScript": "keyscript",
    "SyncClient": "sync",
    "VideoFrame": "media", "AudioChunk": "media",
    "Mp4Recorder": "recorder", "record": "recorder", "probe": "recorder",
    "ProtocolError": "protocol", "ErrorCode": "protocol", "PROTOCOL_VERSION": "protocol",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # the same names, eagerly, for type checkers and IDEs
    from .api import TRANSPORTS, connect
    from .base import BusyError, ServerError, StreamClient, StreamEnded
    from .keyscript import KeyScript
    from .media import AudioChunk, VideoFrame
    from .protocol import PROTOCOL_VERSION, ErrorCode, ProtocolError
    from .recorder import Mp4Recorder, probe, record
    from .sync import SyncClient


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'streamgen_client' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
