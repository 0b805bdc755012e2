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

import numpy as np
from fastapi import APIRouter, WebSocket
from PIL import Image
from starlette.websockets import WebSocketDisconnect
from streamgen_client import protocol as P

from .buffer import BufferClosed, OutputBuffer
from .pacing import Pacer, PacerConfig, paced
from .security import check_origin, check_token
from .sessions import Busy, ServerSession, TokenBucket

log = logging.getLogger("streamgen.server.ws")
router = APIRouter()


def encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(frame, "RGB").save(out, format="JPEG", quality=quality)
    return out.getvalue()


class _Socket:
    """Serialises writes (control replies, telemetry and media come from several tasks)."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.lock = asyncio.Lock()
        self.open = True

    async def text(self, data: str) -> None:
        async with self.lock:
            if self.open:
                await self.ws.send_text(data)

    async def binary(self, data: bytes) -> None:
        async with self.lock:
            if self.open:
                await self.ws.send_bytes(data)

    async def close(self, code: int, reason: str = "") -> None:
        async with self.lock:
            if self.open:
                self.open = False
                try:
                    await self.ws.close(code, reason[:120])
                except Exception:  # noqa: BLE001 - already gone
                    pass


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
    app = ws.app.state.streamgen
    settings, metrics, manager = app.settings, app.metrics, app.manager
    sock = _Socket(ws)
    seqs = itertools.count()
    await ws.accept()

    async def fail(code: str, message: str, reply_to: int | None = None, close: int | None = None, **kw) -> None:
        metrics.error(code)
        await sock.text(P.Error(seq=next(seqs), code=code, message=message[:500], reply_to=reply_to, **kw).to_json())
        if close is not None:
            await sock.close(close, code)

    why = check_token(ws, settings) or check_origin(ws, settings)
    if why:
        return await fail("unauthorized", why, close=1008)
    if not app.ready:
        return await fail("busy", "the server is still warming up", retry_after_s=1.0, close=1013)

    # ---- until a valid start
    bucket = TokenBucket(settings.max_messages_per_s, settings.message_burst)
    checker = P.SeqChecker()
    while True:
        data = await _receive(ws, settings.idle_timeout_s)
        if data is None:
            return await sock.close(1000, "idle")
        if not bucket.take():
            return await fail("rate_limited", "control message flood before start", close=1008)
        if isinstance(data, bytes):
            await fail("bad_json", "binary messages are not accepted from clients; send JSON text")
            continue
        if len(data) > settings.max_message_bytes:
            await fail("too_large", f"message is {len(data)} chars, max {settings.max_message_bytes} bytes")
            continue
        try:
            msg = P.parse_client_message(data)
            checker.check(msg.seq)
            if not isinstance(msg, P.Start):
                raise P.ProtocolError("bad_field", f"send 'start' first, got {msg.TYPE!r}", msg.seq)
            spec = manager.spec(msg.model, msg.seq)
            if msg.prompt is not None and not spec.takes_prompt:
                raise P.ProtocolError("out_of_range", f"model {spec.name!r} takes no prompt", msg.seq)
        except P.ProtocolError as e:
            await fail(e.code.value, e.message, reply_to=e.seq)
            continue
        try:
            manager.reserve("ws")
        except Busy as b:
            return await fail("busy", str(b), reply_to=msg.seq, retry_after_s=b.retry_after_s, close=1013)
        break

    try:
        es = await manager.open_engine_session(spec, seed=msg.seed, prompt=msg.prompt, webrtc=False)
    except Exception as e:  # noqa: BLE001
        manager.release()
        return await fail("internal", f"could not start: {type(e).__name__}: {e}", reply_to=msg.seq, close=1011)
    tasks: list[asyncio.Task] = []

    async def close_transport(code: int, reason: str) -> None:
        for t in tasks:
            if t is not asyncio.current_task():
                t.cancel()
        await sock.close(code, reason)

    session = ServerSession(manager, sid=es.id, transport="ws", spec=spec, es=es, send_text=sock.text,
                            close_transport=close_transport, accepts_start=True)
    session.seq_checker.last = msg.seq
    manager.register(session)
    session._seq = seqs  # one seq counter per connection, continuing from the errors above
    await session.send(session.started(reply_to=msg.seq))
    tasks.append(asyncio.ensure_future(_send_video(sock, es.buffer, spec, settings.jpeg_quality, metrics)))
    if spec.sample_rate:
        tasks.append(asyncio.ensure_future(_send_audio(sock, es.buffer)))

    while not session.closed:
        data = await _receive(ws, settings.idle_timeout_s + 1.0)
        if data is None:
            await session.close("disconnected", send_bye=False)
            break
        await session.handle(data)


async def _send_video(sock: _Socket, buffer: OutputBuffer, spec, quality: int, metrics) -> None:
    loop = asyncio.get_running_loop()
    pacer = Pacer(PacerConfig(period_s=1.0 / spec.fps, clock_rate=1_000_000))
    try:
        while True:
            item, _, _, due = await paced(pacer, buffer.next_video)
            jpeg = await loop.run_in_executor(None, encode_jpeg, item.frame, quality)
            hdr = P.MediaHeader(kind=P.MediaKind.VIDEO_JPEG, block_index=item.block_index,
                                frame_index=item.index_in_block, timestamp_us=round(item.frame_no * 1e6 / spec.fps))
            await sock.binary(P.pack_media(hdr, jpeg))
            metrics.frame_sent("ws", time.monotonic() - max(due, item.ready_t))
    except (BufferClosed, asyncio.CancelledError):
        pass
    except Exception as e:  # noqa: BLE001 - the socket went away; the receive loop notices
        log.debug("video sender ended: %s", e)


async def _send_audio(sock: _Socket, buffer: OutputBuffer) -> None:
    try:
        while True:
            blk = await buffer.next_audio_block()
            ch = blk.samples.shape[1] if blk.samples.ndim == 2 else 1
            hdr = P.MediaHeader(kind=P.MediaKind.AUDIO_F32, block_index=blk.block_index, frame_index=0,
                                timestamp_us=round(blk.first_sample * 1e6 / blk.sample_rate), channels=ch,
                                sample_rate=blk.sample_rate)
            await sock.binary(P.pack_media(hdr, blk.samples.astype("<f4").tobytes()))
    except (BufferClosed, asyncio.CancelledError):
        pass
    except Exception as e:  # noqa: BLE001
        log.debug("audio sender ended: %s", e)
