"""Admission by measured capacity: how many streams the engine thread can keep at their frame rate.

The engine steps the sessions of a device on one thread, each model's due sessions together in one
batched step (server/engine.py; at most ``max_batch`` per step). A model whose batched step of ``k``
sessions takes ``step_s(k)`` and whose blocks play for ``frames_per_block / fps`` seconds uses the share
``load = step_s(k) * fps / frames_per_block`` of that thread for those ``k`` streams. Streams stay
real-time while the loads of all models' admitted sessions sum to at most ``utilization`` (< 1 leaves
room for jitter). ``step_s(k)`` is measured, never assumed to be ``k x step_s(1)``: the warm-up times
batches of a few sizes (``seed``, 1, 2, 4 and 8 sessions by default; ``warmup_estimate``: the median of
each size's steps but the first), then the median of the recent
steps per batch size follows the steps the engine takes while streaming (``observe``), so a machine that
gets busier admits fewer new sessions. Steps while streaming are slower than the warm-up's (the encoders, the
transports and the clients share the CPU; the warm-up ran alone), so a size seen only in the warm-up is
not trusted as measured: its time is scaled by the in-server slowdown, the median over the recent
streaming steps of each one's time over the warm-up's time for its size. One session streaming slower
than its warm-up therefore raises the estimate for four before the fourth asks to join.

What is observed are the steady steps: a step in which a session makes its first block (``joining``) is
not counted, since it shares the CPU with that session's one-off start (its connection's ICE / DTLS set-up
and encoders on the event loop, the next client's offer); measured with ``world``: 221 ms for one session's
first block against 72 ms in the warm-up and 95-145 ms for the steady steps of two, and, when that first
step set the estimate, admission refused the third and fourth sessions the steady steps had room for.
The estimates are medians over the last ``WINDOW`` steady steps (not moving averages started at the first
one), so a single slow step moves nothing and a lasting change shows within half a window; until
``MIN_STEPS`` steady steps have been seen (of a size, or of any size for the slowdown) the warm-up's times
stand, since the first steady step alone is as much an outlier as any (another run: one session's second
block, during the next client's connection set-up, 1.37x its warm-up; the steady steps then 0.9-0.95x).

Between measured sizes the time is interpolated linearly; past the largest, every further session costs
that size's time per session; more than ``max_batch`` sessions take several steps. ``max_sessions`` (a
setting) overrides it all.

``measured_capacity(...)`` is the public answer for one model (also in ``GET /v1/models``); a cluster
router can call it or read the endpoint.
"""
from __future__ import annotations

import statistics
import threading
from collections import deque
from dataclasses import dataclass

# The most sessions of one model the capacity search considers (far above what one engine thread runs).
MAX_COUNTED_SESSIONS = 4096


@dataclass(frozen=True, kw_only=True)
class StreamShape:
    """What a model's stream must keep up with."""

    fps: float
    frames_per_block: int

    @property
    def block_period_s(self) -> float:
        return self.frames_per_block / self.fps


def step_seconds(batch_s: dict[int, float], sessions: int, max_batch: int | None = None) -> float:
    """Seconds to step ``sessions`` sessions of a model whose measured batched steps took ``batch_s``
    (batch size -> seconds; not empty): several steps past ``max_batch``; linear between measured sizes;
    outside them, the nearest measured size's time per session (batching is not assumed to pay more
    than it was measured to)."""
    if sessions <= 0:
        return 0.0
    if max_batch is not None and sessions > max_batch:
        full, rest = divmod(sessions, max_batch)
        return full * step_seconds(batch_s, max_batch) + step_seconds(batch_s, rest)
    if sessions in batch_s:
        return batch_s[sessions]
    below = [k for k in batch_s if k < sessions]
    above = [k for k in batch_s if k > sessions]
    if below and above:
        lo, hi = max(below), min(above)
        return batch_s[lo] + (batch_s[hi] - batch_s[lo]) * (sessions - lo) / (hi - lo)
    nearest = max(below) if below else min(above)
    return batch_s[nearest] * sessions / nearest


def warmup_estimate(step_s: list[float]) -> float:
    """A batch size's step time from the warm-up's steps of it (seconds, in order; not empty): the median of
    all but the first (the first of a new batch size pays lazy initialisation and new shapes). The median,
    not the fastest, so that the warm-up's number is the same statistic as the streaming estimate it is
    compared with (``observe``); one step caught by the machine's other work moves neither."""
    steady = step_s[1:] or step_s
    return statistics.median(steady)


def measured_capacity(batch_s: dict[int, float] | None, shape: StreamShape, utilization: float,
                      max_batch: int | None = None) -> int | None:
    """Sessions of one model that one engine thread keeps at frame rate (None before any measurement)."""
    if not batch_s:
        return None
    if min(batch_s.values()) <= 0:
        return 1_000_000  # nothing measurable: not the limit (max_connections and the rate limits are)
    budget = utilization * shape.block_period_s
    k = 0
    while k < MAX_COUNTED_SESSIONS and step_seconds(batch_s, k + 1, max_batch) <= budget:
        k += 1
    return k


class Capacity:
    """Batched-step time estimates per model and batch size, and the admission rule on them (thread-safe)."""

    # Steady steps the estimates are medians over (per batch size, and for the slowdown): at a block period
    # of a quarter second about five seconds of streaming; half of them must change before the median does.
    WINDOW = 20
    # Steady steps needed before their median replaces the warm-up's time (a median of three rejects one outlier).
    MIN_STEPS = 3

    def __init__(self, shapes: dict[str, StreamShape], *, utilization: float, override: int | None,
                 max_batch: int | None = None) -> None:
        self.shapes, self.utilization, self.override, self.max_batch = shapes, utilization, override, max_batch
        self._seeded: dict[str, dict[int, float]] = {}  # the warm-up's steps, by batch size
        self._observed: dict[str, dict[int, deque]] = {}  # the recent steady steps while streaming, by batch size
        self._ratios: dict[str, deque] = {}  # the recent steady steps' time over the warm-up's for their size
        self._lock = threading.Lock()

    def seed(self, model: str, block_s: float, sessions: int = 1) -> None:
        """Set the warm-up's estimate for a batch of ``sessions`` (from its steady-state steps)."""
        with self._lock:
            self._seeded.setdefault(model, {})[sessions] = block_s

    def observe(self, model: str, block_s: float, sessions: int = 1, joining: int = 0) -> None:
        """One batched step of ``sessions`` sessions while streaming (called on the engine thread);
        ``joining``: how many of them made their first block in it (then it is not counted: docstring)."""
        if joining:
            return
        with self._lock:
            table = self._observed.setdefault(model, {})
            table.setdefault(sessions, deque(maxlen=self.WINDOW)).append(block_s)
            seeded = self._seeded.get(model)
            warm = step_seconds(seeded, sessions) if seeded else 0.0
            if warm > 0:
                self._ratios.setdefault(model, deque(maxlen=self.WINDOW)).append(block_s / warm)

    def slowdown(self, model: str) -> float:
        """Streaming steps over warm-up steps of the same size (1.0 before ``MIN_STEPS`` steady steps)."""
        with self._lock:
            return self._slowdown_locked(model)

    def _slowdown_locked(self, model: str) -> float:
        ratios = self._ratios.get(model)
        return statistics.median(ratios) if ratios and len(ratios) >= self.MIN_STEPS else 1.0

    def batch_s(self, model: str) -> dict[int, float]:
        """Estimated seconds per batched step, by batch size (a new dict): the median of the recent steady
        steps where that size has streamed ``MIN_STEPS`` of them, else the warm-up's time times the in-server
        slowdown."""
        with self._lock:
            slow = self._slowdown_locked(model)
            table = {k: v * slow for k, v in self._seeded.get(model, {}).items()}
            table.update({k: statistics.median(v) for k, v in self._observed.get(model, {}).items()
                          if len(v) >= self.MIN_STEPS})
            return table

    def warmup_s(self, model: str) -> dict[int, float]:
        """The warm-up's own step times, by batch size (a new dict; unscaled)."""
        with self._lock:
            return dict(self._seeded.get(model, {}))

    def block_s(self, model: str) -> float | None:
        """Seconds of one session's block stepped alone (None: not measured yet)."""
        table = self.batch_s(model)
        return step_seconds(table, 1) if table else None

    def load(self, model: str, sessions: int = 1) -> float | None:
        """Share of the engine thread ``sessions`` streams of ``model`` use (None: not measured yet)."""
        table = self.batch_s(model)
        if not table:
            return None
        return step_seconds(table, sessions, self.max_batch) / self.shapes[model].block_period_s

    def sessions_for(self, model: str) -> int | None:
        """How many sessions of ``model`` alone fit (the override when set)."""
        if self.override is not None:
            return self.override
        return measured_capacity(self.batch_s(model), self.shapes[model], self.utilization, self.max_batch)

    def admits(self, running: list[str], model: str) -> bool:
        """Whether one more ``model`` session fits next to sessions of the models in ``running``."""
        if self.override is not None:
            return len(running) + 1 <= self.override
        if not running:
            return True  # one stream always runs, even of a model too slow for real time on this device
        counts: dict[str, int] = {}
        for m in running + [model]:
            counts[m] = counts.get(m, 0) + 1
        loads = [self.load(m, k) for m, k in counts.items()]
        if any(v is None for v in loads):
            return False  # unmeasured: one stream at a time until a block has been timed
        return sum(loads) <= self.utilization  # type: ignore[arg-type]

    def describe(self, model: str) -> dict:
        table = self.batch_s(model)
        b = step_seconds(table, 1) if table else None
        return {"block_ms": None if b is None else round(b * 1000.0, 3),
                "batch_ms": {str(k): round(v * 1000.0, 3) for k, v in sorted(table.items())},
                "warmup_batch_ms": {str(k): round(v * 1000.0, 3) for k, v in sorted(self.warmup_s(model).items())},
                "in_server_slowdown": round(self.slowdown(model), 3),
                "measured_capacity": measured_capacity(table, self.shapes[model], self.utilization, self.max_batch)}
