"""One engine thread per device: it owns the pipelines and steps every session in rounds.

The asyncio event loop never runs model code: it only hands input to an :class:`EngineSession`
(under a lock, latest-wins) and takes frames out of its :class:`OutputBuffer`. Session creation,
steps, prompt switches and ``close()`` all run here, on the engine thread. A session is stepped
only while its buffer holds less than ``ahead_blocks`` blocks, so generation follows playback and a
slow consumer costs dropped frames, never a growing queue.

Each round gathers the sessions that want a block (rotating who goes first), groups them by model and
steps each group in one batched step (``streamgen.batch_step``; at most ``max_batch`` sessions per
step): per session its own input (actions, prompt switch), its own ``BlockInfo`` and its own failure.
A session's input and prompt switch are applied before the batched forwards; if a batch fails, its
sessions are stepped again one by one, so only the faulty one fails. Sessions join and leave between
steps (commands run after every step), so a joining or leaving session never stalls the others.

Riding along (``ride_along``, on by default): when a model has a due session, its other sessions whose
buffers still have room for one more block join the step. Sessions started at different moments play
out of phase, so without this each round finds one or two of them due and the batch fragments (four
world sessions stepped as batches of 1 / 2 / 3 / 4 in 15 / 11 / 16 / 14 steps, a step of one costing
about 0.4 of a step of four); with it they stay in phase and step together. The price: a rider's block
waits up to one block longer in its buffer (at most ``ahead_blocks + 1`` blocks queued).
"""
from __future__ import annotations

import concurrent.futures
import itertools
import logging
import queue
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable

from streamgen.batch_step import run_batch

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
    step_s: float  # the step that generated the block (all sessions of its batch)
    ready_t: float
    batch_size: int = 1  # sessions generated in the same batched step


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
    avatar: Any = None  # server.avatar_input.AvatarInput for models that take speech, else None
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
                 idle_wait_s: float = 0.1, max_batch: int | None = None,
                 on_batch: Callable[[str, int, float, int], None] | None = None, ride_along: bool = True) -> None:
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
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch={max_batch}: must be >= 1 (or None: all due sessions of a model)")
        self.max_batch = max_batch
        self.ride_along = ride_along  # a model's sessions with room for a block join its due ones (docstring)
        # (model, sessions, seconds, joining) after every batched step, on the engine thread; joining: how many
        # of its sessions made their first block in it (a step that shares the CPU with their start-up)
        self._on_batch = on_batch
        self.steps = 0  # blocks generated
        self.batches: Counter[int] = Counter()  # batch size -> batched steps of that size

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

    def warmup(self, model: str, blocks: int, sessions: int = 1) -> list[float]:
        """Generate and discard ``blocks`` blocks of ``sessions`` sessions stepped together (one batched
        step per block) on the engine thread; returns each step's seconds."""
        def run() -> list[float]:
            times = []
            pipe = self.pipelines[model]
            streams = []
            try:
                streams = [pipe.start(seed=i) for i in range(sessions)]
                for _ in range(blocks):
                    t0 = time.perf_counter()
                    run_batch(streams, [s.begin_block(None) for s in streams], t0)
                    times.append(time.perf_counter() - t0)
            finally:
                for s in streams:
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
        """Step every session that wants a block once, each model's in batches (rotating who goes first);
        True if any stepped. A method of its own so that no reference to a session outlives the round
        (closed sessions are freed at once)."""
        n = len(self._sessions)
        start = next(self._rr) % n if n else 0
        order = self._sessions[start:] + self._sessions[:start]
        due_models = {es.model for es in order if self._due(es)}
        groups: dict[str, list[EngineSession]] = {}
        for es in order:
            if es.model in due_models and self._steppable(es):
                groups.setdefault(es.model, []).append(es)
        stepped = False
        for model, due in groups.items():
            size = self.max_batch or len(due)
            for i in range(0, len(due), size):
                if self._stop.is_set():
                    return stepped
                batch = [es for es in due[i : i + size] if self._steppable(es)]  # a command may have closed some
                if batch:
                    self._step_batch(model, batch)
                    stepped = True
                self._run_commands()  # new sessions and closes need not wait for a whole round
        return stepped

    @staticmethod
    def _live(es: EngineSession) -> bool:
        """Neither closing, paused nor failed, and (avatars) its speech input ready for a block."""
        return (not (es.closing or es.paused or es.failed is not None)
                and (es.avatar is None or es.avatar.ready(es.session)))

    def _due(self, es: EngineSession) -> bool:
        return self._live(es) and es.buffer.wants_block()

    def _steppable(self, es: EngineSession) -> bool:
        """Due, or (riding along) live with room in its buffer for one block beyond its ahead quota."""
        if not self._live(es):
            return False
        if es.buffer.wants_block():
            return True
        room = es.buffer.ahead_frames + self.pipelines[es.model].frames_per_chunk
        return self.ride_along and not es.buffer.closed and es.buffer.queued() < room

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

    def _step_batch(self, model: str, group: list[EngineSession]) -> None:
        """One block of every session in ``group`` (one model) in one batched step."""
        t0 = time.perf_counter()
        begun = []  # (session, its wire actions, its action windows, the last applied input seq)
        for es in group:
            actions, prompt, applied_seq = es.take_input()
            try:
                if prompt is not _UNSET:
                    es.session.set_prompt(prompt)
                audio = es.avatar.take(es.session) if es.avatar is not None else None  # speech; a new reference
                begun.append((es, actions, es.session.begin_block(actions or None, audio), applied_seq))
            except Exception as e:  # noqa: BLE001 - its input fails this session only
                self._fail(es, e)
        if not begun:
            return
        try:
            chunks = run_batch([b[0].session for b in begun], [b[2] for b in begun], t0)
        except Exception:  # noqa: BLE001 - find the faulty session: step them one by one
            if len(begun) > 1:
                log.warning("a batch of %d %s sessions failed; stepping them one by one", len(begun), model, exc_info=True)
            for b in begun:
                t1 = time.perf_counter()
                try:
                    chunk = run_batch([b[0].session], [b[2]], t1)[0]
                except Exception as e:  # noqa: BLE001 - a failing session must not take the engine down
                    self._fail(b[0], e)
                    continue
                self._done(model, [(b, chunk)], time.perf_counter() - t1)
            return
        self._done(model, list(zip(begun, chunks)), time.perf_counter() - t0)

    def _done(self, model: str, done: list, step_s: float) -> None:
        """Count one batched step of ``len(done)`` sessions and hand each its block."""
        self.batches[len(done)] += 1
        if self._on_batch is not None:
            joining = sum(1 for (es, *_), _chunk in done if es.blocks == 0)
            self._notify(lambda n: self._on_batch(model, n, step_s, joining), len(done))
        for (es, actions, _, applied_seq), chunk in done:
            self._deliver(es, actions, applied_seq, chunk, step_s, len(done))

    def _fail(self, es: EngineSession, e: BaseException) -> None:
        log.error("session %s failed at block %d", es.id, es.blocks, exc_info=e)
        es.failed = e
        self._notify(es.on_error, e)

    def _deliver(self, es: EngineSession, actions: list, applied_seq: int | None, chunk, step_s: float,
                 batch_size: int) -> None:
        """Hand one session's generated block to its buffer and report it."""
        ready_t = time.monotonic()
        try:
            es.action_log.extend(actions)
            if actions:
                es.block_actions.append((chunk.block_index, actions))
            # Avatars send back the speech that drove the block (their model makes no audio of its own).
            audio, rate = es.avatar.driving(es.session) if es.avatar is not None else (chunk.audio, chunk.sample_rate)
            es.buffer.push_block(chunk.video, audio, rate, chunk.block_index, ready_t)
        except Exception as e:  # noqa: BLE001
            self._fail(es, e)
            return
        es.blocks += 1
        self.steps += 1
        timings = {k: round(v * 1000.0, 3) for k, v in chunk.timings.items() if v >= 0}
        info = BlockInfo(block_index=chunk.block_index, frames=int(chunk.video.shape[0]), timings_ms=timings,
                         queue_depth=es.buffer.queued(), dropped_frames=es.buffer.dropped,
                         applied_seq=applied_seq, step_s=step_s, ready_t=ready_t, batch_size=batch_size)
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
