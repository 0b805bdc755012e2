"""One engine thread per device: it owns the pipelines and steps every session round-robin.

The asyncio event loop never runs model code: it only hands input to an :class:`EngineSession`
(under a lock, latest-wins) and takes frames out of its :class:`OutputBuffer`. Session creation,
``step()``, prompt switches and ``close()`` all run here, on the engine thread. A session is stepped
only while its buffer holds less than ``ahead_blocks`` blocks, so generation follows playback and a
slow consumer costs dropped frames, never a growing queue.
"""
from __future__ import annotations

import concurrent.futures
import itertools
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from .buffer import OutputBuffer

log = logging.getLogger("streamgen.server.engine")
_UNSET = object()


@dataclass
class BlockInfo:
    """What the engine reports after each block (sent as ``telemetry``)."""

    block_index: int
    frames: int
    timings_ms: dict[str, float]
    queue_depth: int
    dropped_frames: int
    applied_seq: int | None
    step_s: float
    ready_t: float


@dataclass(eq=False)
class EngineSession:
    """A stream as the engine sees it: input slots written by the loop, the model session and output."""

    id: str
    model: str
    seed: int
    prompt: str | None
    buffer: OutputBuffer
    max_pending_actions: int = 512
    on_block: Callable[[BlockInfo], None] | None = None  # called on the engine thread
    on_error: Callable[[BaseException], None] | None = None  # called on the engine thread
    session: Any = None  # streamgen.Session, created and closed on the engine thread
    paused: bool = False
    closing: bool = False
    failed: BaseException | None = None
    blocks: int = 0
    actions_dropped: int = 0
    # Every action passed to step(), in order (bounded): what the model actually received.
    action_log: deque = field(default_factory=lambda: deque(maxlen=4096))
    # (block_index, actions) for the recent blocks that had any: enough to replay a stream offline.
    block_actions: deque = field(default_factory=lambda: deque(maxlen=1024))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _actions: list = field(default_factory=list)
    _last_seq: int | None = None
    _prompt: Any = _UNSET

    # ----- loop side (any thread) -----------------------------------------------------------------
    def add_action(self, action: dict, seq: int | None = None) -> None:
        with self._lock:
            if len(self._actions) >= self.max_pending_actions:
                self._actions.pop(0)
                self.actions_dropped += 1
            self._actions.append(action)
            if seq is not None:
                self._last_seq = seq

    def set_prompt(self, prompt: str | None) -> None:
        with self._lock:
            self._prompt = prompt  # latest wins; applied at the next block boundary

    def take_input(self) -> tuple[list, Any, int | None]:
        with self._lock:
            actions, self._actions = self._actions, []
            prompt, self._prompt = self._prompt, _UNSET
            return actions, prompt, self._last_seq


class Engine:
    """The engine thread of one device."""

    def __init__(self, pipelines: dict[str, Any], *, device: str, on_block_metrics: Callable | None = None,
                 idle_wait_s: float = 0.1) -> None:
        self.pipelines = pipelines
        self.device = device
        self._sessions: list[EngineSession] = []
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rr = itertools.count()
        self._on_block_metrics = on_block_metrics
        self._idle_wait_s = idle_wait_s  # the longest the thread sleeps without a wake-up (shutdown latency)
        self.steps = 0

    # ----- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"engine for {self.device} already started")
        self._thread = threading.Thread(target=self._run, name=f"streamgen-engine-{self.device}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wake(self) -> None:
        self._wake.set()

    def submit(self, fn: Callable[[], Any]) -> concurrent.futures.Future:
        """Run ``fn`` on the engine thread (between blocks); returns a Future of its result."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        if self._stop.is_set() or not self.alive:
            fut.set_exception(RuntimeError(f"engine for {self.device} is not running"))
            return fut
        self._commands.put((fn, fut))
        self._wake.set()
        return fut

    # ----- session management (called from the loop; the work runs on the engine thread) -----------
    def open(self, es: EngineSession) -> concurrent.futures.Future:
        def create() -> EngineSession:
            pipe = self.pipelines[es.model]
            es.session = pipe.start(seed=es.seed, prompt=es.prompt)
            self._sessions.append(es)
            return es
        return self.submit(create)

    def close(self, es: EngineSession) -> None:
        """Mark for closing; the engine thread frees the model session at its next turn."""
        es.closing = True
        es.buffer.close()
        self._wake.set()

    def session_count(self) -> int:
        return len(self._sessions)

    def warmup(self, model: str, blocks: int) -> list[float]:
        """Generate and discard ``blocks`` blocks on the engine thread; returns each block's seconds."""
        def run() -> list[float]:
            times = []
            s = self.pipelines[model].start(seed=0)
            try:
                for _ in range(blocks):
                    t0 = time.perf_counter()
                    s.step()
                    times.append(time.perf_counter() - t0)
            finally:
                s.close()
            return times
        return self.submit(run).result()

    # ----- the thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._run_commands()
            self._reap()
            if not self._round():
                self._wake.wait(self._idle_wait_s)
                self._wake.clear()
        # Shutdown: free every session still open.
        self._run_commands()
        for es in self._sessions:
            es.closing = True
        self._reap()

    def _round(self) -> bool:
        """Step each session that wants a block once (rotating who goes first); True if any stepped.
        A method of its own so that no reference to a session outlives the round (closed sessions are
        freed at once)."""
        stepped = False
        n = len(self._sessions)
        start = next(self._rr) % n if n else 0
        for es in self._sessions[start:] + self._sessions[:start]:
            if self._stop.is_set():
                break
            if es.closing or es.paused or es.failed is not None or not es.buffer.wants_block():
                continue
            self._step(es)
            stepped = True
            self._run_commands()  # new sessions and closes need not wait for a whole round
        return stepped

    def _run_commands(self) -> None:
        while True:
            try:
                fn, fut = self._commands.get_nowait()
            except queue.Empty:
                return
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                fut.set_exception(e)

    def _reap(self) -> None:
        keep = []
        for es in self._sessions:
            if es.closing or es.failed is not None:
                if es.session is not None:
                    try:
                        es.session.close()
                    except Exception:  # noqa: BLE001
                        log.exception("closing session %s", es.id)
                    es.session = None
                es.on_block = es.on_error = None
            else:
                keep.append(es)
        self._sessions = keep

    def _step(self, es: EngineSession) -> None:
        actions, prompt, applied_seq = es.take_input()
        try:
            if prompt is not _UNSET:
                es.session.set_prompt(prompt)
            t0 = time.perf_counter()
            chunk = es.session.step(actions=actions or None)
            step_s = time.perf_counter() - t0
            ready_t = time.monotonic()
            es.action_log.extend(actions)
            if actions:
                es.block_actions.append((chunk.block_index, actions))
            es.buffer.push_block(chunk.video, chunk.audio, chunk.sample_rate, chunk.block_index, ready_t)
        except Exception as e:  # noqa: BLE001 - a failing session must not take the engine down
            log.exception("session %s failed at block %d", es.id, es.blocks)
            es.failed = e
            self._notify(es.on_error, e)
            return
        es.blocks += 1
        self.steps += 1
        timings = {k: round(v * 1000.0, 3) for k, v in chunk.timings.items() if v >= 0}
        info = BlockInfo(block_index=chunk.block_index, frames=int(chunk.video.shape[0]), timings_ms=timings,
                         queue_depth=es.buffer.queued(), dropped_frames=es.buffer.dropped,
                         applied_seq=applied_seq, step_s=step_s, ready_t=ready_t)
        if self._on_block_metrics is not None:
            self._notify(lambda i: self._on_block_metrics(es.model, i), info)
        self._notify(es.on_block, info)

    @staticmethod
    def _notify(cb: Callable | None, arg: Any) -> None:
        """Run a listener; its failure (e.g. the event loop already closed at shutdown) never stops the engine."""
        if cb is None:
            return
        try:
            cb(arg)
        except Exception:  # noqa: BLE001
            log.debug("listener failed", exc_info=True)
