"""Admission, the session registry, liveness, and the control protocol shared by both transports.

A :class:`ServerSession` is one client's stream, whatever carries it: it parses control messages with
the shared protocol module (``streamgen_client.protocol``), rate-limits them, hands input to its
:class:`EngineSession`, answers ``pong`` / ``error`` / ``bye`` and relays per-block ``telemetry``.
The :class:`SessionManager` admits by measured capacity (server/capacity.py; ``max_sessions`` overrides)
and by per-address limits (a refused client learns when to retry), reaps sessions that went quiet, and
closes everything at shutdown. :func:`read_control` is the one parser of an incoming control message
for both transports and both phases (before and after ``start``): every failure is a ProtocolError.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import re
import secrets
import time
from typing import Any, Awaitable, Callable, Iterator

from streamgen_client import protocol as P

from .avatar_control import AvatarControl
from .pacing import VOICE_AHEAD_BLOCKS
from .buffer import OutputBuffer
from .capacity import Capacity
from .engine import BlockInfo, Engine, EngineSession
from .lag import StreamLag
from .limits import AddressLimitConfig, AddressLimits, TokenBucket
from .memory import release_freed_memory
from .metrics import Metrics
from .model_spec import ModelSpec
from .settings import ServerSettings

log = logging.getLogger("streamgen.server.sessions")
_TIMING_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
# A burst of rate violations this long past is forgiven; only a persistent flood closes a session.
VIOLATION_FORGIVE_S = 5.0
# While flooding, one rate_limited answer per this many dropped messages (never 1:1).
VIOLATION_REPORT_EVERY = 10
# Seconds after a session ends before its freed memory is trimmed (once the engine has freed it too).
TRIM_DELAY_S = 1.0


class Busy(Exception):
    """A session refused: no capacity (``busy``) or the client address opens sessions too fast
    (``rate_limited``)."""

    def __init__(self, message: str, retry_after_s: float, code: str = "busy") -> None:
        super().__init__(message)
        self.retry_after_s, self.code = retry_after_s, code

    def to_error(self, seq: int = 0, reply_to: int | None = None) -> P.Error:
        return P.Error(seq=seq, code=self.code, message=str(self), reply_to=reply_to, retry_after_s=self.retry_after_s)


def read_control(data: Any, max_bytes: int, checker: P.SeqChecker) -> P.Message:
    """Parse one incoming control message and check its seq; any fault raises ProtocolError (typed)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        raise P.ProtocolError("bad_json", "binary messages are not accepted from clients; send JSON text")
    if not isinstance(data, str):
        raise P.ProtocolError("bad_json", f"a control message must be text, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise P.ProtocolError("too_large", f"message is {len(data)} chars, max {max_bytes} bytes")
    try:
        msg = P.parse_client_message(data)
    except P.ProtocolError:
        raise
    except Exception as e:  # noqa: BLE001 - a parser bug must still answer the client, not kill its session
        log.warning("parser fault on a client message: %s: %s", type(e).__name__, e)
        raise P.ProtocolError("bad_field", f"message could not be parsed ({type(e).__name__})") from None
    checker.check(msg.seq)
    return msg


class ServerSession:
    """One client's stream. ``send_text`` writes a control message; ``close_transport`` ends the carrier."""

    def __init__(self, manager: "SessionManager", *, sid: str, transport: str, spec: ModelSpec,
                 es: EngineSession, send_text: Callable[[str], Awaitable[None]],
                 close_transport: Callable[[int, str], Awaitable[None]], address: str = "",
                 seq_checker: P.SeqChecker | None = None, seqs: Iterator[int] | None = None) -> None:
        self.manager, self.id, self.transport, self.spec, self.es = manager, sid, transport, spec, es
        self.address = address
        self._send_text, self._close_transport = send_text, close_transport
        s = manager.settings
        self.bucket = TokenBucket(s.max_messages_per_s, s.message_burst)
        self.seq_checker = seq_checker or P.SeqChecker()  # WebSocket: continues the pre-start checker
        self._seq = seqs or itertools.count()  # WebSocket: one counter per connection
        self.last_seen = time.monotonic()
        self.created = self.last_seen
        self.rate_violations = 0
        self._last_violation = 0.0
        self.closed = False
        self.lag = StreamLag(spec.fps)  # how far behind real time, reported in every telemetry
        self.close_reason: str | None = None
        self.connected = transport == "ws"  # WebRTC: set once the peer connection is up
        loop = asyncio.get_running_loop()
        es.on_block = lambda info: loop.call_soon_threadsafe(self._on_block, info)
        es.on_error = lambda exc: loop.call_soon_threadsafe(self._on_engine_error, exc)
        # Avatars: speech in (binary PCM, `say`) and the reference image; None for other models.
        self.avatar = AvatarControl(es.avatar, width=spec.width, height=spec.height, wake=manager.engine.wake,
                                    send_error=self.send_error) if es.avatar is not None else None

    # ----- outgoing ----------------------------------------------------------------------------------
    def next_seq(self) -> int:
        return next(self._seq)

    async def send(self, msg: P.Message) -> None:
        if self.closed and not isinstance(msg, (P.Bye, P.Error)):
            return
        try:
            await self._send_text(msg.to_json())
        except Exception as e:  # noqa: BLE001 - a dead carrier is found by the reaper / close events
            log.debug("session %s: send failed: %s", self.id, e)

    async def send_error(self, code: str, message: str, reply_to: int | None = None, **kw: Any) -> None:
        self.manager.metrics.error(code)
        await self.send(P.Error(seq=self.next_seq(), code=code, message=message[:P.MAX_ERROR_CHARS],
                                reply_to=reply_to, **kw))

    def started(self, reply_to: int | None = None) -> P.Started:
        return P.Started(seq=self.next_seq(), session_id=self.id, model=self.spec.info(), reply_to=reply_to)

    def _on_block(self, info: BlockInfo) -> None:
        if self.closed:
            return
        timings = {k: float(v) for k, v in info.timings_ms.items() if _TIMING_NAME.fullmatch(k)}
        timings["step"] = round(info.step_s * 1000.0, 3)
        msg = P.Telemetry(seq=self.next_seq(), block_index=info.block_index, frames=info.frames,
                          timings_ms=dict(list(timings.items())[: P.MAX_OPTIONS]), queue_depth=info.queue_depth,
                          dropped_frames=info.dropped_frames, applied_seq=info.applied_seq,
                          behind_ms=round(self.lag.block(info.ready_t, info.frames) * 1000.0, 1))
        asyncio.ensure_future(self.send(msg))

    def _on_engine_error(self, exc: BaseException) -> None:
        asyncio.ensure_future(self._fail(exc))

    async def _fail(self, exc: BaseException) -> None:
        await self.send_error("internal", f"generation failed: {type(exc).__name__}: {exc}")
        await self.close("error", code=1011)

    # ----- incoming ----------------------------------------------------------------------------------
    def admit(self) -> bool:
        """Rate limit (synchronous, so a transport can check before queueing). A refused message is
        answered with ``rate_limited`` (not 1:1 in a flood); a persistent flood closes the session (1008)."""
        now = self.last_seen = time.monotonic()
        if self.closed:
            return False
        # Both buckets are charged: the session's own, and its address's (which reconnecting cannot reset).
        if self.bucket.take() and self.manager.limits.message(self.address):
            if self.rate_violations and now - self._last_violation > VIOLATION_FORGIVE_S:
                self.rate_violations = 0
            return True
        self.rate_violations += 1
        self._last_violation = now
        if self.rate_violations == self.manager.settings.max_rate_violations + 1:
            asyncio.ensure_future(self._flood_close())
        elif self.rate_violations <= self.manager.settings.max_rate_violations and (
                self.rate_violations == 1 or self.rate_violations % VIOLATION_REPORT_EVERY == 0):
            asyncio.ensure_future(self.send_error(
                "rate_limited", f"over {self.manager.settings.max_messages_per_s:g} messages per second; "
                "message dropped", retry_after_s=1.0))
        return False

    async def _flood_close(self) -> None:
        await self.send_error("rate_limited", "control message flood; closing")
        await self.close("rate_limited", code=1008)

    async def handle(self, data: str | bytes, admitted: bool = False) -> P.Message | None:
        """Handle one control message; returns the parsed message when it was valid."""
        if not admitted and not self.admit():
            return None
        if self.closed:
            return None
        try:
            if self.avatar is not None and isinstance(data, (bytes, bytearray, memoryview)):
                self.avatar.audio(data)  # speech PCM (docs/protocol.md section 5)
                return None
            msg = read_control(data, self.manager.settings.max_message_bytes, self.seq_checker)
            await self._apply(msg)
        except P.ProtocolError as e:
            await self.send_error(e.code.value, e.message, reply_to=e.seq)
            return None
        except Exception as e:  # noqa: BLE001 - nothing a client sends may raise out of its input path
            log.error("session %s: fault handling a message: %s: %s", self.id, type(e).__name__, e)
            await self.send_error("internal", f"the message could not be handled ({type(e).__name__})")
            return None
        return msg

    async def _apply(self, msg: P.Message) -> None:
        es, spec = self.es, self.spec
        if isinstance(msg, P.KeyAction):
            if spec.keys and msg.key not in spec.keys:
                raise P.ProtocolError("out_of_range", f"key {msg.key!r} is not one of the model's keys "
                                      f"{list(spec.keys)}", msg.seq)
            es.add_action({"kind": "key", "key": msg.key, "down": msg.down, "t_ms": float(msg.t_ms)}, msg.seq)
        elif isinstance(msg, P.MouseAction):
            if spec.takes_actions and not spec.takes_mouse:
                raise P.ProtocolError("out_of_range", f"model {spec.name!r} does not take the mouse", msg.seq)
            es.add_action({"kind": "mouse", "dx": float(msg.dx), "dy": float(msg.dy), "t_ms": float(msg.t_ms)},
                          msg.seq)
        elif isinstance(msg, P.Prompt):
            spec.check_prompt(msg.prompt, msg.seq)
            es.set_prompt(msg.prompt)
        elif isinstance(msg, P.Pause):
            es.paused = True
        elif isinstance(msg, P.Resume):
            es.paused = False
            self.lag.reanchor()
            self.manager.engine.wake()
        elif isinstance(msg, P.Ping):
            await self.send(P.Pong(seq=self.next_seq(), reply_to=msg.seq, t_ms=msg.t_ms, server_ms=time.time() * 1000.0))
        elif isinstance(msg, P.Stop):
            await self.close("stop")
        elif isinstance(msg, (P.Say, P.Reference)):
            if self.avatar is None:
                raise P.ProtocolError("out_of_range", f"model {spec.name!r} takes no speech or reference image", msg.seq)
            self.avatar.apply(msg)
        elif isinstance(msg, P.Start):
            raise P.ProtocolError("bad_field", "the session is already started", msg.seq)

    # ----- ending ------------------------------------------------------------------------------------
    async def close(self, reason: str, code: int = 1000, send_bye: bool = True) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        if self.avatar is not None:
            self.avatar.close()
        if send_bye:
            await self.send(P.Bye(seq=self.next_seq(), reason=reason[:P.MAX_REASON_CHARS]))
        self.manager._remove(self, reason)
        try:
            await self._close_transport(code, reason)
        except Exception:  # noqa: BLE001
            log.debug("session %s: transport close failed", self.id, exc_info=True)


class SessionManager:
    def __init__(self, settings: ServerSettings, engine: Engine, metrics: Metrics, specs: dict[str, ModelSpec]) -> None:
        self.settings, self.engine, self.metrics, self.specs = settings, engine, metrics, specs
        self.sessions: dict[str, ServerSession] = {}
        self._pending: list[str] = []  # models of reserved slots not yet registered
        self._reaper: asyncio.Task | None = None
        self._trim_after: float | None = None  # when to hand ended sessions' memory back to the OS
        self.capacity = Capacity({n: sp.shape for n, sp in specs.items()},
                                 utilization=settings.capacity_utilization, override=settings.max_sessions,
                                 max_batch=settings.max_batch)
        self.limits = AddressLimits(AddressLimitConfig(
            sessions_per_min=settings.client_sessions_per_min, session_burst=settings.client_session_burst,
            messages_per_s=settings.client_messages_per_s, message_burst=settings.client_message_burst,
            max_clients=settings.max_tracked_clients))

    # ----- admission ---------------------------------------------------------------------------------
    def in_use(self) -> int:
        return len(self.sessions) + len(self._pending)

    def reserve(self, transport: str, model: str, address: str) -> None:
        """Take a slot now (on the loop, so it is atomic) or raise Busy; pair with register() or
        release(). The caller answers the refusal (and counts it in the error metric, once)."""
        if not self.limits.new_session(address):
            self.metrics.refused.labels(transport).inc()
            per_s = self.settings.client_sessions_per_min / 60.0
            raise Busy(f"address {address} opens sessions too fast (max {self.settings.client_sessions_per_min:g}"
                       f" per minute)", retry_after_s=round(1.0 / per_s, 3), code="rate_limited")
        running = [s.spec.name for s in self.sessions.values()] + self._pending
        if not self.capacity.admits(running, model):
            self.metrics.refused.labels(transport).inc()
            raise Busy(f"{len(running)} sessions in use; {self.capacity_note(model)}", self.settings.retry_after_s)
        self._pending.append(model)

    def capacity_note(self, model: str) -> str:
        n = self.capacity.sessions_for(model)
        how = "set by max_sessions" if self.settings.max_sessions is not None else "measured"
        return f"capacity for {model!r}: {n if n is not None else 'not measured yet'} ({how})"

    def release(self, model: str) -> None:
        self._pending.remove(model)

    def spec(self, model: str, seq: int | None = None, prompt: str | None = None) -> ModelSpec:
        """The loaded model named ``model``, checked against the start's ``prompt``; else ProtocolError."""
        spec = self.specs.get(model)
        if spec is None:
            raise P.ProtocolError("out_of_range", f"unknown model {model!r}; this server streams {sorted(self.specs)}", seq)
        spec.check_prompt(prompt, seq)
        return spec

    async def open_engine_session(self, spec: ModelSpec, *, seed: int, prompt: str | None,
                                  webrtc: bool) -> EngineSession:
        loop = asyncio.get_running_loop()
        # Avatars over WebRTC may queue blocks more: the margin of the voice's jitter buffer (pacing.Playout).
        ahead = self.settings.ahead_blocks + (VOICE_AHEAD_BLOCKS if webrtc and spec.speech_in is not None else 0)
        buf = OutputBuffer(loop, fps=spec.fps, frames_per_block=spec.frames_per_block,
                           max_age_s=self.settings.max_frame_age_s, ahead_blocks=ahead,
                           webrtc=webrtc, on_consumed=self.engine.wake)
        es = EngineSession(id="s-" + secrets.token_hex(6), model=spec.name, seed=seed, prompt=prompt, buffer=buf,
                           max_pending_actions=self.settings.max_pending_actions, avatar=spec.avatar_input())
        if ahead > self.settings.ahead_blocks:  # the voice's room is for a live voice; silence keeps the usual lead
            es.avatar.hold_idle(buf.queued, self.settings.ahead_blocks * spec.frames_per_block)
        await asyncio.wrap_future(self.engine.open(es))
        return es

    def register(self, s: ServerSession) -> None:
        """Turn the reservation into a live session."""
        self._pending.remove(s.spec.name)
        self.sessions[s.id] = s
        self.metrics.sessions_total.labels(s.transport).inc()
        self.metrics.sessions.labels(s.transport).inc()
        self.metrics.active = len(self.sessions)

    def _remove(self, s: ServerSession, reason: str) -> None:
        if self.sessions.pop(s.id, None) is not None:
            self.metrics.sessions.labels(s.transport).dec()
            self.metrics.reclaimed.labels(reason).inc()
            self.metrics.dropped.inc(s.es.buffer.dropped)
        self.metrics.active = len(self.sessions)
        self.engine.close(s.es)
        # The engine thread frees the session at its next turn; trim once that has surely happened.
        self._trim_after = time.monotonic() + TRIM_DELAY_S

    # ----- liveness ----------------------------------------------------------------------------------
    def start_reaper(self) -> None:
        self._reaper = asyncio.ensure_future(self._reap_forever())

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(min(self.settings.heartbeat_interval_s, 1.0))
            await self.reap()
            due = self._trim_after is not None and time.monotonic() >= self._trim_after
            if due and self.engine.session_count() <= len(self.sessions):  # the engine let go of the ended ones
                self._trim_after = None
                release_freed_memory()  # milliseconds, once per wave of ended sessions; no worker thread

    async def reap(self) -> None:
        now = time.monotonic()
        for s in list(self.sessions.values()):
            if s.connected and now - s.last_seen > self.settings.idle_timeout_s:
                log.info("session %s idle for %.1f s: reclaimed", s.id, now - s.last_seen)
                await s.close("idle", code=1000)
            elif not s.connected and now - s.created > self.settings.connect_timeout_s:
                await s.close("connect_timeout", code=1000, send_bye=False)

    async def shutdown(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        await asyncio.gather(*(s.close("shutdown", code=1001) for s in list(self.sessions.values())),
                             return_exceptions=True)
