"""The HTTP server's own limits: uvicorn options built from the settings, and a guarded HTTP/1.1 protocol.

uvicorn alone accepts request heads of any size (httptools has no limit), never closes a connection
that has not sent a request yet, admits any number of connections, and lets the kernel grow a socket's
send buffer to megabytes for a client that stopped reading. ``uvicorn_options(settings)`` bounds all
four from the settings; ``streamgen serve``, the benchmark and the tests all use it.

At shutdown uvicorn closes every open WebSocket with code 1012 before the app's lifespan ends, so the
sessions' ``bye`` would never arrive: :class:`StreamgenServer` ends the sessions first (each gets its
``bye`` with reason ``shutdown``), then lets uvicorn close what is left. It also applies the settings'
malloc options (server/memory.py) when built, before uvicorn runs the lifespan that starts the engine thread.
"""
from __future__ import annotations

import asyncio
import socket
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .memory import configure_allocator
from .settings import ServerSettings

# WebSocket frames the server accepts: control messages are small, but a margin above their limit
# lets an oversized one arrive whole and get a typed too_large answer instead of a dropped socket.
WS_MAX_SIZE_FLOOR = 1 << 20


def guarded_h11(handshake_timeout_s: float, send_buffer_bytes: int) -> type[H11Protocol]:
    """h11 (whose head-size limit uvicorn passes through) with a deadline for the first request head (a
    connection that has not sent a complete request within ``handshake_timeout_s`` is closed) and a fixed
    send buffer: ``send_buffer_bytes`` in the kernel and as the transport's high-water mark, so writes
    to a client that stops reading block soon (and time out, server/ws.py) instead of queueing on."""

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer_bytes)
            transport.set_write_buffer_limits(high=send_buffer_bytes)
            self.head_deadline = self.loop.call_later(handshake_timeout_s, self.head_timeout)

        def head_timeout(self) -> None:
            # Still no request on this protocol (a WebSocket upgrade hands the transport to another one).
            if self.cycle is None and self.transport.get_protocol() is self and not self.transport.is_closing():
                self.transport.close()

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not None or self.transport.get_protocol() is not self:
                self.head_deadline.cancel()

        def connection_lost(self, exc: Exception | None) -> None:
            self.head_deadline.cancel()
            super().connection_lost(exc)

    return GuardedH11Protocol


def uvicorn_options(settings: ServerSettings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` / ``uvicorn.Config`` (besides the app, host and port)."""
    return {
        "http": guarded_h11(settings.handshake_timeout_s, settings.send_buffer_bytes),
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        "timeout_keep_alive": settings.keepalive_timeout_s,
        "limit_concurrency": settings.max_connections,
        "ws_ping_interval": settings.heartbeat_interval_s * 5,
        "ws_ping_timeout": settings.idle_timeout_s,
        "ws_max_size": max(WS_MAX_SIZE_FLOOR, settings.max_message_bytes * 4),
    }


class StreamgenServer(uvicorn.Server):
    """uvicorn's server for the streamgen app: at shutdown, every session ends with its ``bye`` first."""

    def __init__(self, config: uvicorn.Config, app: Any) -> None:
        super().__init__(config)
        self.streamgen_app = app
        settings = app.state.streamgen.settings
        configure_allocator(arena_max=settings.malloc_arena_max, mmap_threshold=settings.malloc_mmap_threshold)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        manager = getattr(self.streamgen_app.state.streamgen, "manager", None)
        if manager is not None:
            await manager.shutdown()  # bye "shutdown" on every session, while their sockets are still open
        await super().shutdown(sockets)
