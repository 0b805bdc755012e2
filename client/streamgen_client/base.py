"""The transport-independent half of a client session: control messages, queues, iteration."""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator, Callable, Coroutine, TypeVar

from . import protocol as p
from .media import AudioChunk, VideoFrame

log = logging.getLogger("streamgen_client")
T = TypeVar("T")
# 512 frames is a minute of 8 fps video: a reader that falls further behind loses the oldest frames.
DEFAULT_QUEUE = 512
PING_INTERVAL_S = 2.0  # the server reclaims sessions that stay silent for its idle timeout
_END = object()


class ServerError(Exception):
    """The server answered with an ``error`` message (or an HTTP error carrying one)."""

    def __init__(self, error: p.Error):
        super().__init__(f"{error.code}: {error.message}")
        self.error = error
        self.code = error.code


class BusyError(ServerError):
    """No free session slot; retry after ``retry_after_s`` seconds."""

    @property
    def retry_after_s(self) -> float | None:
        return self.error.retry_after_s


class StreamEnded(ConnectionError):
    """The session ended without this client asking: the server said ``bye`` with a reason of its own
    (``idle``, ``shutdown``, ...) or the connection was lost (the server died, the network went away).
    Raised by iteration and ``next_frame`` / ``next_audio`` once the queued media is consumed."""

    def __init__(self, reason: str, bye: p.Bye | None = None):
        super().__init__(reason)
        self.reason = reason
        self.bye = bye


def server_error(error: p.Error) -> ServerError:
    return BusyError(error) if error.code == p.ErrorCode.BUSY.value else ServerError(error)


class StreamClient:
    """One session over one transport. Use ``streamgen_client.connect`` to get one.

    Iterate ``frames()`` / ``audio()`` / ``telemetry()``; send input with ``send_action``,
    ``send_mouse``, ``set_prompt``, ``pause``, ``resume``; end with ``close()``.
    """

    transport = ""

    def __init__(self, *, queue_size: int = DEFAULT_QUEUE):
        self.info: p.ModelInfo | None = None
        self.session_id: str | None = None
        self.errors: list[p.Error] = []  # errors the server sent after the session started
        self.dropped_frames = 0  # video frames dropped on this side because nobody read them in time
        self.dropped_audio = 0  # audio chunks likewise (a reader of frames only drops all audio)
        self.rtt_ms: float | None = None
        self.last_telemetry: p.Telemetry | None = None
        self.bye: p.Bye | None = None
        self.end_reason: str | None = None  # why the session ended, once it has
        self._ended: StreamEnded | None = None  # set when it ended without close() (raised to readers)
        self._closing = False
        self._seq = 0
        self._video: asyncio.Queue = asyncio.Queue(queue_size)
        self._audio: asyncio.Queue = asyncio.Queue(queue_size)
        self._telemetry: asyncio.Queue = asyncio.Queue(64)
        self._started: asyncio.Future = asyncio.get_running_loop().create_future()
        self._closed = asyncio.Event()
        self._bye = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="streamgen-client-decode")

    # ------------------------------------------------------------------ transport hooks
    async def _send_text(self, text: str) -> None:
        raise NotImplementedError

    async def _close_transport(self) -> None:
        raise NotImplementedError

    async def _send_speech(self, pcm: Any) -> None:
        """Send mono float32 speech at the model's ``audio_in_rate`` (the transport's way, paced)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ sending
    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    async def send(self, make: Callable[[int], p.Message]) -> int:
        """Build a message with the next seq (``make(seq)``), send it, return the seq."""
        if self._closed.is_set():
            raise ConnectionError(f"{self.transport} session {self.session_id} is closed")
        seq = self._next_seq()
        await self._send_text(make(seq).to_json())
        return seq

    async def send_action(self, key: str, down: bool, t_ms: float | None = None) -> int:
        t = time.time() * 1000.0 if t_ms is None else t_ms
        return await self.send(lambda s: p.KeyAction(seq=s, key=key, down=down, t_ms=t))

    async def send_mouse(self, dx: float, dy: float, t_ms: float | None = None) -> int:
        t = time.time() * 1000.0 if t_ms is None else t_ms
        return await self.send(lambda s: p.MouseAction(seq=s, dx=float(dx), dy=float(dy), t_ms=t))

    async def set_prompt(self, prompt: str) -> int:
        return await self.send(lambda s: p.Prompt(seq=s, prompt=prompt))

    async def pause(self) -> int:
        return await self.send(lambda s: p.Pause(seq=s))

    async def resume(self) -> int:
        return await self.send(lambda s: p.Resume(seq=s))

    async def send_audio(self, samples: Any, sample_rate: int) -> float:
        """Avatars: speak ``samples`` (float32 ``[S]`` or ``[S, C]`` in [-1, 1] at ``sample_rate``; any rate and
        channel count: resampled to the model's mono speech-in rate) to the face. Over WebSocket it goes up in
        100 ms messages paced on the wall clock, over WebRTC on the audio track opened with ``speech=True``.
        Returns when the audio is handed over; its duration in seconds."""
        from .speech import to_mono

        rate = self.info.audio_in_rate if self.info is not None else None
        if not rate:
            raise ValueError(f"model {self.info.name if self.info else '?'!r} takes no audio in")
        pcm = await asyncio.to_thread(to_mono, samples, sample_rate, rate)
        await self._send_speech(pcm)
        return pcm.size / rate

    async def say(self, text: str) -> int:
        """Avatars: the server speaks ``text`` (espeak-ng) and the face says it."""
        return await self.send(lambda s: p.Say(seq=s, text=text))

    async def set_reference(self, image_bytes: bytes) -> int:
        """Avatars: a new reference image (the identity): PNG or JPEG bytes, sent base64 (docs/protocol.md)."""
        import base64

        data = base64.b64encode(image_bytes).decode("ascii")
        return await self.send(lambda s: p.Reference(seq=s, image=data))

    async def ping(self) -> int:
        return await self.send(lambda s: p.Ping(seq=s, t_ms=time.time() * 1000.0))

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``coro`` as a task of this client (``close`` cancels it)."""
        self._tasks.append(asyncio.create_task(coro, name=name))

    def start_keepalive(self, name: str) -> None:
        """Ping every PING_INTERVAL_S until the client closes."""
        self.spawn(self._keepalive(), name)

    async def _keepalive(self) -> None:
        while not self._closed.is_set():
            await asyncio.sleep(PING_INTERVAL_S)
            try:
                await self.ping()
            except Exception:  # closed under us: the reader ends the session
                return

    # ------------------------------------------------------------------ receiving
    def _on_control(self, text: str | bytes) -> None:
        try:
            msg = p.parse_server_message(text)
        except p.ProtocolError as e:
            if not self._started.done() and '"started"' in str(text):
                # e.g. a server that speaks another protocol version: fail now rather than time out
                self._fail_start(ConnectionError(f"unusable 'started' from the server: {e}"))
            log.warning("ignoring malformed server message: %s", e)
            return
        if isinstance(msg, p.Started):
            self.info, self.session_id = msg.model, msg.session_id
            if not self._started.done():
                self._started.set_result(msg)
        elif isinstance(msg, p.Telemetry):
            self.last_telemetry = msg
            self._push(self._telemetry, msg)
        elif isinstance(msg, p.Pong):
            if msg.t_ms:
                self.rtt_ms = time.time() * 1000.0 - msg.t_ms
        elif isinstance(msg, p.Error):
            if not self._started.done():
                self._fail_start(server_error(msg))
            else:
                log.warning("server error: %s %s (reply to %s)", msg.code, msg.message, msg.reply_to)
                self.errors.append(msg)
        elif isinstance(msg, p.Bye):
            self.bye = msg
            self._bye.set()

    def _fail_start(self, exc: BaseException) -> None:
        self._started.set_exception(exc)
        self._started.exception()  # retrieved here: wait_started re-raises it if someone waits

    def _push(self, q: asyncio.Queue, item: object) -> bool:
        """Latest wins: a full queue loses its oldest item (returns True when one was lost)."""
        lost = q.full()
        if lost:
            q.get_nowait()
        q.put_nowait(item)
        return lost

    def _on_video(self, frame: VideoFrame) -> None:
        self.dropped_frames += self._push(self._video, frame)

    def _on_audio(self, chunk: AudioChunk) -> None:
        self.dropped_audio += self._push(self._audio, chunk)

    def _finish(self, reason: str = "", server_closed: bool = False) -> None:
        """The transport ended: wake every reader. ``server_closed``: the server closed it on purpose (a close
        frame with a code), as opposed to a connection that was lost."""
        if self._closed.is_set():
            return
        self._closed.set()
        if not self._started.done():
            self._fail_start(ConnectionError(f"{self.transport} closed before start: {reason}"))
        if self.bye is not None:
            self.end_reason = f"the server ended the session: {self.bye.reason}"
        elif self._closing:
            self.end_reason = reason
        elif server_closed:
            self.end_reason = f"the server closed the connection: {reason}"
        else:
            self.end_reason = f"connection to the server lost ({reason})"
        requested = self._closing or (self.bye is not None and self.bye.reason == "stop")
        if self._started.done() and not requested:
            self._ended = StreamEnded(self.end_reason, self.bye)
        for q in (self._video, self._audio, self._telemetry):
            self._push(q, _END)

    async def wait_started(self, timeout: float) -> p.Started:
        try:
            return await asyncio.wait_for(asyncio.shield(self._started), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"no 'started' from the server within {timeout} s") from None

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def _at_end(self, q: asyncio.Queue) -> None:
        """The end marker was read: leave it for later readers; raise if the end was not the client's."""
        q.put_nowait(_END)
        if self._ended is not None:
            raise self._ended

    async def _iterate(self, q: asyncio.Queue) -> AsyncIterator:
        while True:
            item = await q.get()
            if item is _END:
                self._at_end(q)
                return
            yield item

    def _drain(self, q: asyncio.Queue) -> list:
        out = []
        while not q.empty():
            item = q.get_nowait()
            if item is _END:
                q.put_nowait(_END)
                break
            out.append(item)
        return out

    def drain_audio(self) -> list[AudioChunk]:
        """Every audio chunk received and not read yet, without waiting (a video reader calls this now and
        then so that audio is not lost to the full queue)."""
        return self._drain(self._audio)

    def drain_telemetry(self) -> list[p.Telemetry]:
        """Every telemetry message received and not read yet, without waiting."""
        return self._drain(self._telemetry)

    def frames(self) -> AsyncIterator[VideoFrame]:
        return self._iterate(self._video)

    def audio(self) -> AsyncIterator[AudioChunk]:
        return self._iterate(self._audio)

    def telemetry(self) -> AsyncIterator[p.Telemetry]:
        return self._iterate(self._telemetry)

    async def next_frame(self, timeout: float | None = None) -> VideoFrame | None:
        """The next frame; None once the client closed the session; ``StreamEnded`` (with the reason) when
        the server ended it or the connection was lost."""
        return await self._next(self._video, timeout)

    async def next_audio(self, timeout: float | None = None) -> AudioChunk | None:
        return await self._next(self._audio, timeout)

    async def _next(self, q: asyncio.Queue, timeout: float | None):
        item = await asyncio.wait_for(q.get(), timeout)
        if item is _END:
            self._at_end(q)
            return None
        return item

    async def _in_pool(self, fn: Callable[..., T], *args) -> T:
        """Run decode work off the event loop, one job at a time, in arrival order."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # ------------------------------------------------------------------ closing
    async def close(self, timeout: float = 2.0) -> None:
        """Send ``stop``, wait briefly for ``bye``, close the transport and the reader tasks."""
        self._closing = True
        if not self._closed.is_set() and self._started.done() and not self._started.exception():
            try:
                await self.send(lambda s: p.Stop(seq=s))
                ends = [asyncio.ensure_future(e.wait()) for e in (self._bye, self._closed)]
                try:
                    await asyncio.wait(ends, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for e in ends:
                        e.cancel()
            except (asyncio.TimeoutError, ConnectionError, OSError) as e:
                log.debug("no clean bye: %r", e)
        await self._close_transport()
        self._finish("closed by client")
        current = asyncio.current_task()
        for t in self._tasks:
            if t is not current:
                t.cancel()
        await asyncio.gather(*(t for t in self._tasks if t is not current), return_exceptions=True)
        self._pool.shutdown(wait=False)

    async def __aenter__(self) -> "StreamClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
