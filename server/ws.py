"""WebSocket transport: ``/v1/ws``, the same session semantics as WebRTC over one socket.

Text messages are the JSON control protocol (the first must be ``start``); binary messages from the
server are a ``MediaHeader`` plus a JPEG frame or f32 PCM (docs/protocol.md section 5). JPEG encoding
runs in a thread pool, never on the event loop; frames are paced on the wall clock like WebRTC's.
"""
from __future__ import annotations

import asyncio
import io
import itertools
import logging
import time
from typing import Callable

import numpy as np
from fastapi import APIRouter, WebSocket
from PIL import Image
from starlette.websockets import WebSocketDisconnect
from streamgen_client import protocol as P

from .buffer import BufferClosed, OutputBuffer
from .pacing import Pacer, PacerConfig, paced
from .limits import TokenBucket
from .security import check_origin, check_token
from .sessions import Busy, ServerSession, read_control

log = logging.getLogger("streamgen.server.ws")
router = APIRouter()
# Closing a socket whose client still reads takes a round trip; one that does not read is abandoned.
CLOSE_TIMEOUT_S = 2.0
MAX_CLOSE_REASON_BYTES = 120  # a close frame's reason must fit in 123 bytes


def encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(frame, "RGB").save(out, format="JPEG", quality=quality)
    return out.getvalue()


class OutboundSocket:
    """All writes to one WebSocket: serialised (control replies, telemetry and media come from several
    tasks), bounded and timed. A write that cannot leave within ``write_timeout_s`` (the client stopped
    reading and TCP's buffers are full), more than ``max_waiting`` writes queued, or a write to a client
    that already left marks the socket dead and calls ``on_dead`` once: the session is reclaimed."""

    def __init__(self, ws: WebSocket, *, write_timeout_s: float, max_waiting: int) -> None:
        self.ws = ws
        self.write_timeout_s, self.max_waiting = write_timeout_s, max_waiting
        self.lock = asyncio.Lock()
        self.open = True
        self.waiting = 0
        self.dead_reason: str | None = None
        self.on_dead: Callable[[str], None] | None = None

    def _die(self, reason: str) -> None:
        if self.dead_reason is None:
            self.dead_reason = reason
            self.open = False
            log.info("websocket %s: %s", _peer(self.ws), reason)
            if self.on_dead is not None:
                self.on_dead(reason)

    async def _write(self, message: dict) -> bool:
        """True when the message left; False when the socket is (now) dead."""
        if not self.open:
            return False
        if self.waiting >= self.max_waiting:
            self._die(f"{self.waiting} writes waiting: the client is not reading")
            return False
        self.waiting += 1
        try:
            async with asyncio.timeout(self.write_timeout_s):
                async with self.lock:
                    if not self.open:
                        return False
                    await self.ws.send(message)
            return True
        except TimeoutError:
            self._die(f"a write waited {self.write_timeout_s:g} s: the client is not reading")
        except Exception as e:  # noqa: BLE001 - the client left (ClientDisconnect, closed transport, ...)
            self._die(f"write failed, client gone ({type(e).__name__})")
        finally:
            self.waiting -= 1
        return False

    async def text(self, data: str) -> bool:
        return await self._write({"type": "websocket.send", "text": data})

    async def binary(self, data: bytes) -> bool:
        return await self._write({"type": "websocket.send", "bytes": data})

    async def close(self, code: int, reason: str = "") -> None:
        """Send a close frame when the socket still works (bounded in time); never raises."""
        if self.dead_reason is None and self.open:
            self.open = False
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    async with self.lock:
                        await self.ws.close(code, reason[:MAX_CLOSE_REASON_BYTES])
            except (TimeoutError, Exception):  # noqa: BLE001 - already gone or not reading: nothing to tell
                pass
        self.open = False


def _peer(ws: WebSocket) -> str:
    return ws.client.host if ws.client else "?"


async def _receive(ws: WebSocket, timeout: float) -> str | bytes | None:
    """The next message, or None when the peer left (or sent nothing for ``timeout``)."""
    try:
        m = await asyncio.wait_for(ws.receive(), timeout)
    except (asyncio.TimeoutError, WebSocketDisconnect, RuntimeError):
        return None
    if m["type"] == "websocket.disconnect":
        return None
    return m.get("text") if m.get("text") is not None else (m.get("bytes") or b"")


@router.websocket("/v1/ws")
async def ws_endpoint(ws: WebSocket) -> None:
    """Nothing a client does (leaving at any moment included) raises out of here."""
    try:
        await _serve(ws)
    except Exception as e:  # noqa: BLE001 - a fault here is a server bug; log one line and end the connection
        log.error("websocket %s: %s: %s", _peer(ws), type(e).__name__, e)


async def _serve(ws: WebSocket) -> None:
    app = ws.app.state.streamgen
    settings, metrics, manager = app.settings, app.metrics, app.manager
    address = _peer(ws)
    sock = OutboundSocket(ws, write_timeout_s=settings.write_timeout_s, max_waiting=settings.send_queue_max)
    seqs = itertools.count()
    try:
        await ws.accept()
    except Exception:  # noqa: BLE001 - the client left during the handshake
        return

    async def fail(code: str, message: str, reply_to: int | None = None, close: int | None = None, **kw) -> None:
        metrics.error(code)
        await sock.text(P.Error(seq=next(seqs), code=code, message=message[:P.MAX_ERROR_CHARS], reply_to=reply_to,
                                **kw).to_json())
        if close is not None:
            await sock.close(close, code)

    why = check_token(ws, settings) or check_origin(ws, settings)
    if why:
        return await fail("unauthorized", why, close=1008)
    if not app.ready:
        return await fail("busy", "the server is still warming up", retry_after_s=1.0, close=1013)

    # ---- until a valid start (the same parser and checks as a started session's)
    bucket = TokenBucket(settings.max_messages_per_s, settings.message_burst)
    checker = P.SeqChecker()
    while True:
        data = await _receive(ws, settings.idle_timeout_s)
        if data is None:
            return await sock.close(1000, "idle")
        if not bucket.take() or not manager.limits.message(address):
            return await fail("rate_limited", "control message flood before start", close=1008)
        try:
            msg = read_control(data, settings.max_message_bytes, checker)
            if not isinstance(msg, P.Start):
                raise P.ProtocolError("bad_field", f"send 'start' first, got {msg.TYPE!r}", msg.seq)
            spec = manager.spec(msg.model, msg.seq, msg.prompt)
        except P.ProtocolError as e:
            await fail(e.code.value, e.message, reply_to=e.seq)
            if not sock.open:
                return
            continue
        try:
            manager.reserve("ws", spec.name, address)
        except Busy as b:
            return await fail(b.code, str(b), reply_to=msg.seq, retry_after_s=b.retry_after_s, close=1013)
        break

    try:
        es = await manager.open_engine_session(spec, seed=msg.seed, prompt=msg.prompt, webrtc=False)
    except BaseException as e:
        manager.release(spec.name)
        if isinstance(e, Exception):
            return await fail("internal", f"could not start: {type(e).__name__}: {e}", reply_to=msg.seq, close=1011)
        raise
    tasks: list[asyncio.Task] = []
    done = asyncio.Event()

    async def close_transport(code: int, reason: str) -> None:
        await sock.close(code, reason)
        done.set()

    session = ServerSession(manager, sid=es.id, transport="ws", spec=spec, es=es, send_text=sock.text,
                            close_transport=close_transport, address=address, seq_checker=checker, seqs=seqs)
    sock.on_dead = lambda reason: asyncio.ensure_future(session.close("write_timeout" if "reading" in reason
                                                                      else "disconnected", send_bye=False))
    manager.register(session)
    await session.send(session.started(reply_to=msg.seq))
    tasks.append(asyncio.ensure_future(_send_video(sock, es.buffer, spec, settings.jpeg_quality, metrics)))
    if spec.sample_rate:
        tasks.append(asyncio.ensure_future(_send_audio(sock, es.buffer)))
    tasks.append(asyncio.ensure_future(_read_loop(ws, session, settings.idle_timeout_s + 1.0)))
    try:
        await done.wait()
    finally:
        # Every task of the session ends with it: cancelled and awaited, so none outlives the connection.
        await session.close("disconnected", send_bye=False)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _read_loop(ws: WebSocket, session: ServerSession, timeout: float) -> None:
    while not session.closed:
        data = await _receive(ws, timeout)
        if data is None:
            await session.close("disconnected", send_bye=False)
            return
        await session.handle(data)


async def _send_video(sock: OutboundSocket, buffer: OutputBuffer, spec, quality: int, metrics) -> None:
    loop = asyncio.get_running_loop()
    pacer = Pacer(PacerConfig(period_s=1.0 / spec.fps, clock_rate=1_000_000))
    try:
        while True:
            item, _, _, due = await paced(pacer, buffer.next_video)
            jpeg = await loop.run_in_executor(None, encode_jpeg, item.frame, quality)
            hdr = P.MediaHeader(kind=P.MediaKind.VIDEO_JPEG, block_index=item.block_index,
                                frame_index=item.index_in_block, timestamp_us=round(item.frame_no * 1e6 / spec.fps))
            if not await sock.binary(P.pack_media(hdr, jpeg)):
                return
            metrics.frame_sent("ws", time.monotonic() - max(due, item.ready_t))
    except (BufferClosed, asyncio.CancelledError):
        pass
    except Exception as e:  # noqa: BLE001 - the socket went away; the receive loop notices
        log.debug("video sender ended: %s", e)


async def _send_audio(sock: OutboundSocket, buffer: OutputBuffer) -> None:
    try:
        while True:
            blk = await buffer.next_audio_block()
            ch = blk.samples.shape[1] if blk.samples.ndim == 2 else 1
            hdr = P.MediaHeader(kind=P.MediaKind.AUDIO_F32, block_index=blk.block_index, frame_index=0,
                                timestamp_us=round(blk.first_sample * 1e6 / blk.sample_rate), channels=ch,
                                sample_rate=blk.sample_rate)
            if not await sock.binary(P.pack_media(hdr, blk.samples.astype("<f4").tobytes())):
                return
    except (BufferClosed, asyncio.CancelledError):
        pass
    except Exception as e:  # noqa: BLE001
        log.debug("audio sender ended: %s", e)
