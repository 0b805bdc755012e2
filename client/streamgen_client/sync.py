"""A blocking wrapper: the async client runs on an event loop in a background thread."""
from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Coroutine, Iterator, TypeVar

from . import protocol as p
from .base import StreamClient
from .api import connect
from .media import AudioChunk, VideoFrame

T = TypeVar("T")


class SyncClient:
    """``with SyncClient("http://127.0.0.1:8000", transport="ws") as c: for f in c.frames(): ...``"""

    def __init__(self, url: str, **kw: Any):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="streamgen-client-loop", daemon=True)
        self._thread.start()
        try:
            self.client: StreamClient = self._run(connect(url, **kw))
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:  # = TimeoutError from Python 3.11 on
            fut.cancel()
            raise

    @property
    def info(self) -> p.ModelInfo | None:
        return self.client.info

    @property
    def session_id(self) -> str | None:
        return self.client.session_id

    # ----- what the session reports (read on this thread; the loop thread only replaces them whole)
    @property
    def telemetry(self) -> p.Telemetry | None:
        """The latest per-block telemetry (block index, timings, queue depth, dropped frames, applied_seq)."""
        return self.client.last_telemetry

    @property
    def rtt_ms(self) -> float | None:
        """Round trip of the latest ping / pong (the client pings every 2 s)."""
        return self.client.rtt_ms

    @property
    def errors(self) -> list[p.Error]:
        """Errors the server sent after the session started (e.g. ``out_of_range`` for a key it ignores)."""
        return list(self.client.errors)

    @property
    def dropped_frames(self) -> int:
        """Frames lost on this side because nobody read them in time (the queue keeps the newest)."""
        return self.client.dropped_frames

    @property
    def end_reason(self) -> str | None:
        """Why the session ended, once it has (a ``bye`` reason or the lost connection)."""
        return self.client.end_reason

    def next_frame(self, timeout: float | None = None) -> VideoFrame | None:
        """The next frame; None once this client closed the session; ``StreamEnded`` with the reason when
        the server ended it or died; TimeoutError after ``timeout`` s."""
        return self._run(self.client.next_frame(), timeout)

    def next_audio(self, timeout: float | None = None) -> AudioChunk | None:
        return self._run(self.client.next_audio(), timeout)

    def drain_audio(self) -> list[AudioChunk]:
        """Every audio chunk received and not read yet, without waiting."""
        return self._run(_call(self.client.drain_audio))

    def drain_telemetry(self) -> list[p.Telemetry]:
        """Every telemetry message received and not read yet, without waiting."""
        return self._run(_call(self.client.drain_telemetry))

    def frames(self, timeout: float | None = None) -> Iterator[VideoFrame]:
        """Frames until this client closes the session; raises ``StreamEnded`` (with the reason) when the
        server ends it or dies."""
        while (f := self.next_frame(timeout)) is not None:
            yield f

    def send_action(self, key: str, down: bool) -> int:
        return self._run(self.client.send_action(key, down))

    def send_mouse(self, dx: float, dy: float) -> int:
        return self._run(self.client.send_mouse(dx, dy))

    def set_prompt(self, prompt: str) -> int:
        return self._run(self.client.set_prompt(prompt))

    def send_audio(self, samples: Any, sample_rate: int) -> float:
        """Avatars: speak float32 ``[S]`` / ``[S, C]`` audio at ``sample_rate`` to the face (resampled to the model's
        speech-in rate; paced in real time, so this returns about when the audio has gone up); its seconds."""
        return self._run(self.client.send_audio(samples, sample_rate))

    def say(self, text: str) -> int:
        """Avatars: the server speaks ``text`` and the face says it."""
        return self._run(self.client.say(text))

    def set_reference(self, image_bytes: bytes) -> int:
        """Avatars: a new reference image (PNG or JPEG bytes)."""
        return self._run(self.client.set_reference(image_bytes))

    def pause(self) -> int:
        return self._run(self.client.pause())

    def resume(self) -> int:
        return self._run(self.client.resume())

    def record(self, path: str, seconds: float, speech: tuple[Any, int] | None = None) -> dict[str, Any]:
        """Record ``seconds`` of media to an mp4 and return ``probe(path)``; ``speech``: (samples, rate) sent
        to an avatar model while recording."""
        from .recorder import record

        return self._run(record(self.client, path, seconds, speech=speech))

    def close(self) -> None:
        if self._loop.is_running():
            try:
                self._run(self.client.close(), timeout=10)
                self._run(self._loop.shutdown_default_executor(), timeout=10)  # asyncio.to_thread workers
            finally:
                self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> "SyncClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


async def _call(fn: Any) -> Any:
    """Run a plain function on the client's loop (its queues belong to that loop)."""
    return fn()
