"""WebRTC transport (aiortc): ``POST /v1/offer``, paced media tracks and the ``control`` data channel.

The answer carries all server candidates (aiortc gathers them before ``setLocalDescription`` returns),
so there is no trickle ICE. The video track hands out frames that the engine thread already turned
into ``av.VideoFrame``s; the audio track sends 20 ms of 48 kHz stereo per ``recv()``, silence when
the model made none. Both are paced by :mod:`.pacing`; aiortc encodes in its executor.
"""
from __future__ import annotations

import asyncio
import fractions
import logging
import math
import time
from collections import deque

import numpy as np
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import SessionDescription
from av import AudioFrame, AudioResampler
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect
from streamgen_client import protocol as P

from .avatar_control import read_microphone
from .buffer import WEBRTC_RATE, BufferClosed, OutputBuffer
from .pacing import VOICE_AHEAD_BLOCKS, Pacer, PacerConfig, Playout, PlayoutConfig, paced, played, replay
from .security import check_origin, check_token
from .sessions import Busy, ServerSession

log = logging.getLogger("streamgen.server.webrtc")
VIDEO_CLOCK = 90_000
AUDIO_SAMPLES = WEBRTC_RATE // 50  # 20 ms
# Closing: wait up to BYE_FLUSH_S for SCTP to take the last messages (error, bye), then BYE_LINGER_S more
# for them to reach the wire, before the peer connection goes.
BYE_FLUSH_S = 1.0
BYE_LINGER_S = 0.1
router = APIRouter()


class PacedVideoTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, buffer: OutputBuffer, fps: float, metrics, playout: Playout | None = None) -> None:
        super().__init__()
        self.buffer, self.metrics, self.fps = buffer, metrics, fps
        self.pacer = Pacer(PacerConfig(period_s=1.0 / fps, clock_rate=VIDEO_CLOCK))
        self.playout = playout  # avatars: the clock shared with the voice (pacing.Playout), else the pacer
        self.next_frame = 0  # avatars: the stream's number of the next frame (a dropped frame leaves its time)
        self.schedule: deque[tuple[float, int]] = deque(maxlen=4000)  # (media time s, pts) of recent frames
        self.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.sent = 0
        # (pts, ready, handed) of recent frames, monotonic seconds: for benchmarks and debugging.
        self.history: deque[tuple[int, float, float]] = deque(maxlen=2000)

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        try:
            if self.playout is None:
                item, pts, now, due = await paced(self.pacer, self.buffer.next_video)
                self.schedule.append((item.frame_no / self.fps, pts))
            else:
                item, due, _ = await played(self.playout, self.next_frame / self.fps, self.buffer.next_video)
                if item.frame_no > self.next_frame:  # frames dropped as stale keep their time: it plays at its own
                    due = await replay(self.playout, item.frame_no / self.fps)
                self.next_frame = item.frame_no + 1
                now = time.monotonic()
                pts = self.pacer.last_pts = max(self.playout.pts(due, VIDEO_CLOCK), self.pacer.last_pts + 1)
                self.schedule.append((item.frame_no / self.fps, pts))
        except BufferClosed:
            self.stop()
            raise MediaStreamError from None
        frame = item.av_frame
        frame.pts, frame.time_base = pts, self.time_base
        self.sent += 1
        ready = max(due, item.ready_t)
        self.history.append((pts, ready, now))
        self.metrics.frame_sent("webrtc", now - ready)
        return frame


class PacedAudioTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self, buffer: OutputBuffer, playout: Playout | None = None) -> None:
        super().__init__()
        self.buffer = buffer
        self.pacer = Pacer(PacerConfig(period_s=AUDIO_SAMPLES / WEBRTC_RATE, clock_rate=WEBRTC_RATE))
        self.time_base = fractions.Fraction(1, WEBRTC_RATE)
        self._silence = np.zeros((1, AUDIO_SAMPLES * 2), np.int16)
        self.silent_frames = 0
        # Avatars: the voice waits for its block on the clock it shares with the frames (pacing.Playout)
        # instead of playing silence while a block is late.
        self.playout = playout
        self.next_sample = 0  # avatars: the stream position of the next sample
        self.schedule: deque[tuple[float, int]] = deque(maxlen=4000)  # (media time s, pts) of recent sound
        self.taken = 0  # samples taken from the buffer (the media time of the sound, without the playout)

    async def _pcm(self) -> tuple[np.ndarray, int | None]:
        if self.buffer.closed:
            raise BufferClosed()
        pcm = self.buffer.take_pcm(AUDIO_SAMPLES)
        if pcm is None:
            self.silent_frames += 1
            return self._silence, None
        self.taken += AUDIO_SAMPLES
        return pcm.reshape(1, -1), self.taken - AUDIO_SAMPLES  # [n, 2] -> [1, n*2] interleaved s16

    async def _voice(self) -> tuple[np.ndarray, int]:
        pcm, first = await self.buffer.next_pcm(AUDIO_SAMPLES)
        return pcm.reshape(1, -1), first  # [n, 2] -> [1, n*2] interleaved s16

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        try:
            if self.playout is None:
                (pcm, first), pts, _, _ = await paced(self.pacer, self._pcm)
                if first is not None:
                    self.schedule.append((first / WEBRTC_RATE, pts))
            else:
                (pcm, first), play, _ = await played(self.playout, self.next_sample / WEBRTC_RATE, self._voice)
                if first > self.next_sample:  # samples dropped in the buffer: these play at their own time
                    play = await replay(self.playout, first / WEBRTC_RATE)
                self.next_sample = first + AUDIO_SAMPLES
                pts = self.pacer.last_pts = max(self.playout.pts(play, WEBRTC_RATE), self.pacer.last_pts + 1)
                self.schedule.append((first / WEBRTC_RATE, pts))
        except BufferClosed:
            self.stop()
            raise MediaStreamError from None
        frame = AudioFrame.from_ndarray(pcm, format="s16", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = WEBRTC_RATE, pts, self.time_base
        return frame


def _error(status: int, code: str, message: str, metrics, headers: dict | None = None, **kw) -> JSONResponse:
    metrics.error(code)
    body = P.Error(seq=0, code=code, message=message[:P.MAX_ERROR_CHARS], **kw).to_dict()
    return JSONResponse(body, status_code=status, headers=headers)


def check_sdp(sdp: str) -> None:
    """Refuse (ProtocolError, answered 400) what aiortc would choke on later with a 500: the checks
    that need no peer connection. Browsers' and aiortc's own offers always pass."""
    if "\x00" in sdp:
        raise P.ProtocolError("bad_field", "the SDP contains a NUL character")
    try:
        desc = SessionDescription.parse(sdp)
    except Exception as e:  # noqa: BLE001 - any parse failure is the client's bad SDP
        raise P.ProtocolError("bad_field", f"SDP does not parse: {type(e).__name__}: {e}") from None
    kinds = [m.kind for m in desc.media]
    if "video" not in kinds:
        raise P.ProtocolError("bad_field", f"the offer has no video m-line (media: {kinds})")
    if "application" not in kinds:
        raise P.ProtocolError("bad_field", "the offer has no data channel; create the 'control' channel before the offer")
    for i, m in enumerate(desc.media):
        if not m.rtp.muxId:
            raise P.ProtocolError("bad_field", f"m-line {i} ({m.kind}) has no a=mid")


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The request body, read as it streams in: refused (too_large) as soon as it passes ``limit`` (or
    announces more), and (bad_field) when it does not arrive within ``timeout_s`` or the client leaves."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise P.ProtocolError("too_large", f"offer is {declared} bytes, max {limit}")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise P.ProtocolError("too_large", f"offer is over {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise P.ProtocolError("bad_field", f"the offer body did not arrive within {timeout_s:g} s") from None
    except ClientDisconnect:
        raise P.ProtocolError("bad_field", "the client left while sending the offer") from None
    return b"".join(chunks)


@router.get("/v1/ice", tags=["webrtc"], summary="ICE servers (STUN / TURN, with credentials) for a browser peer")
async def ice(request: Request) -> JSONResponse:
    app = request.app.state.streamgen
    why = check_token(request, app.settings)  # TURN credentials: only for those who may open sessions
    if why:
        return _error(401, "unauthorized", why, app.metrics, headers={"WWW-Authenticate": "Bearer"})
    return JSONResponse({"iceServers": app.settings.ice_server_list()}, headers={"Cache-Control": "no-store"})


@router.post("/v1/offer", tags=["webrtc"], summary="WebRTC signalling: an SDP offer in, an SDP answer out")
async def offer(request: Request) -> JSONResponse:
    app = request.app.state.streamgen
    settings, metrics, manager = app.settings, app.metrics, app.manager
    why = check_token(request, settings)
    if why:
        return _error(401, "unauthorized", why, metrics, headers={"WWW-Authenticate": "Bearer"})
    why = check_origin(request, settings)
    if why:
        return _error(403, "unauthorized", why, metrics)
    if not app.ready:
        return _error(503, "busy", "the server is still warming up", metrics,
                      headers={"Retry-After": "1"}, retry_after_s=1.0)
    try:
        body = await read_body(request, settings.max_offer_bytes, settings.body_timeout_s)
        o = P.parse_offer(P.decode_json(body) if len(body) <= P.MAX_CONTROL_BYTES else _loads(body))
        spec = manager.spec(o.model, prompt=o.prompt)
        check_sdp(o.sdp)
    except P.ProtocolError as e:
        return _error(413 if e.code == P.ErrorCode.TOO_LARGE else 400, e.code.value, e.message, metrics)
    address = request.client.host if request.client else "?"
    try:
        manager.reserve("webrtc", spec.name, address)
    except Busy as b:
        return _error(429 if b.code == "rate_limited" else 503, b.code, str(b), metrics,
                      headers={"Retry-After": str(math.ceil(b.retry_after_s))}, retry_after_s=b.retry_after_s)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[RTCIceServer(**s) for s in settings.ice_server_list()]))
    es = session = None
    answered = False
    tasks_before = asyncio.all_tasks()
    try:
        try:
            await asyncio.wait_for(pc.setRemoteDescription(RTCSessionDescription(sdp=o.sdp, type="offer")),
                                   settings.sdp_timeout_s)
        except Exception as e:  # noqa: BLE001 - whatever aiortc makes of a bad SDP is the client's fault
            return _error(400, "bad_field", f"SDP rejected: {type(e).__name__}: {e}", metrics)
        es = await manager.open_engine_session(spec, seed=o.seed, prompt=o.prompt, webrtc=True)
        session = _attach(app, pc, spec, es, address)
        try:
            # Gathers our candidates. What fails here after a parsed offer is still the offer's fault
            # (codecs or transports we cannot answer); our own faults surface before (engine) or not at all.
            await asyncio.wait_for(pc.setLocalDescription(await pc.createAnswer()), settings.answer_timeout_s)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
            return _error(400, "bad_field", f"offer cannot be answered: {type(e).__name__}: {e}", metrics)
        if session.closed:
            # The peer failed or the server was too slow for the connect timeout: a busy server, not a fault.
            return _error(503, "busy", f"the session ended while its answer was prepared ({session.close_reason})",
                          metrics, headers={"Retry-After": str(math.ceil(settings.retry_after_s))},
                          retry_after_s=settings.retry_after_s)
        answered = True
        return JSONResponse({"sdp": pc.localDescription.sdp, "type": "answer", "session_id": es.id})
    except Exception as e:  # noqa: BLE001
        log.error("offer failed: %s: %s", type(e).__name__, e)
        return _error(500, "internal", f"could not answer: {type(e).__name__}: {e}", metrics)
    finally:
        _retrieve_connect_failures(tasks_before)
        if not answered:  # every failure (and a cancelled request) gives the slot and the session back
            if session is not None:
                await session.close("error", send_bye=False)
            else:
                manager.release(spec.name)
                if es is not None:
                    manager.engine.close(es)
                await _close_pc(pc)


def _loads(body: bytes) -> dict:
    """decode_json's strictness for offer bodies, which may exceed the control-message size."""
    import json

    try:
        obj = json.loads(body.decode("utf-8"), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise P.ProtocolError("bad_json", f"not valid UTF-8 JSON: {e}") from None
    if not isinstance(obj, dict):
        raise P.ProtocolError("bad_json", f"offer must be a JSON object, got {type(obj).__name__}")
    return obj


def _retrieve_connect_failures(before: set[asyncio.Task]) -> None:
    """aiortc starts a peer connection's connect (ICE, then DTLS) as a task nobody awaits; when the
    connection is closed before that task runs (a client gone or refused mid-offer), it fails with
    InvalidStateError and asyncio logs "Task exception was never retrieved". The connect tasks the
    offer's SDP calls started (those not in ``before``) get a callback that retrieves and logs that."""
    for task in asyncio.all_tasks() - before:
        if task.get_coro().__qualname__ == "RTCPeerConnection.__connect":
            task.add_done_callback(_connect_done)


def _connect_done(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.info("peer connection closed before it connected: %s: %s", type(task.exception()).__name__, task.exception())


async def _close_pc(pc: RTCPeerConnection) -> None:
    try:
        await pc.close()
    finally:
        pc.remove_all_listeners()  # the handlers reference the session


def _attach(app, pc: RTCPeerConnection, spec, es, address: str) -> ServerSession:
    """Wire the tracks, the control channel and the connection state to a new ServerSession."""
    manager = app.manager
    loop = asyncio.get_running_loop()
    state = {"channel": None}
    inbox: asyncio.Queue = asyncio.Queue(maxsize=app.settings.message_burst * 2)
    playout = None
    if spec.speech_in is not None:  # avatars: the voice and the face on one clock, with a jitter margin of a
        # block less a frame (0.19 s for the avatar preset), a frame wider after each underrun up to the room
        # the buffer's extra blocks give less a frame (0.44 s; pacing.VOICE_AHEAD_BLOCKS)
        fpb, fps = spec.frames_per_block, spec.fps
        playout = Playout(PlayoutConfig(delay_s=(fpb - 1) / fps, grow_s=1 / fps,
                                        max_delay_s=(VOICE_AHEAD_BLOCKS * fpb - 1) / fps))
    video = PacedVideoTrack(es.buffer, spec.fps, app.metrics, playout)
    audio = PacedAudioTrack(es.buffer, playout)
    kinds = {t.kind for t in pc.getTransceivers()}
    pc.addTrack(video)
    if "audio" in kinds:
        pc.addTrack(audio)

    async def send_text(text: str) -> None:
        ch = state["channel"]
        if ch is not None and ch.readyState == "open":
            ch.send(text)

    async def close_transport(code: int, reason: str) -> None:
        video.stop()
        audio.stop()
        ch = state["channel"]
        if ch is not None and ch.readyState == "open" and reason != "disconnected":
            # Let the last messages (error, bye) leave before the transport goes: bufferedAmount drops when
            # SCTP takes the data, and a moment more lets SCTP put it on the wire.
            deadline = loop.time() + BYE_FLUSH_S
            while ch.bufferedAmount > 0 and loop.time() < deadline:
                await asyncio.sleep(0.01)
            await asyncio.sleep(BYE_LINGER_S)
        # Shielded: a cancelled caller must not leave the peer connection half closed (and alive).
        await asyncio.shield(_close_pc(pc))
        # The consumer ends with the session: cancelled and awaited (a 'stop' arrives through the consumer
        # itself; it then returns on its own as the session is closed).
        if consumer is not asyncio.current_task():
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)
        if microphone is not None:
            microphone.cancel()
            await asyncio.gather(microphone, return_exceptions=True)

    session = ServerSession(manager, sid=es.id, transport="webrtc", spec=spec, es=es, send_text=send_text,
                            close_transport=close_transport, address=address)
    session.tracks = (video, audio)  # type: ignore[attr-defined]
    manager.register(session)
    # Avatars: an offer that sends audio (sendrecv) gives the server a remote track: the voice that drives the face.
    mics = [t.receiver.track for t in pc.getTransceivers() if t.kind == "audio" and t.receiver.track is not None]
    microphone = (asyncio.ensure_future(read_microphone(mics[0], es.avatar, manager.engine.wake))
                  if mics and es.avatar is not None else None)

    async def consume() -> None:
        while not session.closed:
            data = await inbox.get()
            await session.handle(data, admitted=True)

    consumer = asyncio.ensure_future(consume())

    @pc.on("datachannel")
    def on_datachannel(channel) -> None:
        if channel.label != "control" or state["channel"] is not None:
            channel.close()
            return
        state["channel"] = channel

        @channel.on("message")
        def on_message(data) -> None:
            # Rate-limited before queueing, so the inbox never holds more than a burst.
            if session.admit():
                try:
                    inbox.put_nowait(data)
                except asyncio.QueueFull:
                    pass

        def on_open() -> None:
            asyncio.ensure_future(session.send(session.started()))

        if channel.readyState == "open":
            on_open()
        else:
            channel.on("open", on_open)

    @pc.on("connectionstatechange")
    async def on_state() -> None:
        if pc.connectionState == "connected":
            session.connected = True
            session.last_seen = time.monotonic()  # idle time counts from the connection (before it: connect_timeout)
        elif pc.connectionState in ("failed", "closed"):
            await session.close("disconnected", send_bye=False)

    return session
