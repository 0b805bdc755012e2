"""Admission by measured capacity: how many streams the engine thread can keep at their frame rate.

The engine steps the sessions of a device on one thread, each model's due sessions together in one
batched step (server/engine.py; at most ``max_batch`` per step). A model whose batched step of ``k``
sessions takes ``step_s(k)`` and whose blocks play for ``frames_per_block / fps`` seconds uses the share
``load = step_s(k) * fps / frames_per_block`` of that thread for those ``k`` streams. Streams stay
real-time while the loads of all models' admitted sessions sum to at most ``utilization`` (< 1 leaves
room for jitter). ``step_s(k)`` is measured, never assumed to be ``k x step_s(1)``: the warm-up times
batches of a few sizes (``seed``, 1, 2, 4 and 8 sessions by default), then a moving average per batch
size follows every step the engine takes while streaming (``observe``), so a machine that gets busier
admits fewer new sessions. Steps while streaming are slower than the warm-up's (the encoders, the
transports and the clients share the CPU; the warm-up ran alone), so a size seen only in the warm-up is
not trusted as measured: its time is scaled by the in-server slowdown, the moving average of each
streaming step's time over the warm-up's time for its size. One session streaming slower than its
warm-up therefore raises the estimate for four before the fourth asks to join. Between measured sizes the time is interpolated linearly; past the largest, every further
session costs that size's time per session; more than ``max_batch`` sessions take several steps. ``max_sessions`` (a setting)
overrides it all.

``measured_capacity(...)`` is the public answer for one model (also in ``GET /v1/models``); a cluster
router can call it or read the endpoint.
"""
from __future__ import annotations

import threading
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

    # Weight of a new step in the moving average: ~20 steps of memory, so a load change shows within
    # a second or two of streaming, while a single slow step barely moves it.
    EMA_WEIGHT = 0.05

    def __init__(self, shapes: dict[str, StreamShape], *, utilization: float, override: int | None,
                 max_batch: int | None = None) -> None:
        self.shapes, self.utilization, self.override, self.max_batch = shapes, utilization, override, max_batch
        self._seeded: dict[str, dict[int, float]] = {}  # the warm-up's steps, by batch size
        self._observed: dict[str, dict[int, float]] = {}  # moving averages of the steps while streaming
        self._slowdown: dict[str, float] = {}  # moving average of streaming step / warm-up step of its size
        self._lock = threading.Lock()

    def seed(self, model: str, block_s: float, sessions: int = 1) -> None:
        """Set the warm-up's estimate for a batch of ``sessions`` (from its steady-state steps)."""
        with self._lock:
            self._seeded.setdefault(model, {})[sessions] = block_s

    def observe(self, model: str, block_s: float, sessions: int = 1) -> None:
        """One batched step of ``sessions`` sessions while streaming (called on the engine thread)."""
        with self._lock:
            table = self._observed.setdefault(model, {})
            table[sessions] = self._ema(table.get(sessions), block_s)
            seeded = self._seeded.get(model)
            warm = step_seconds(seeded, sessions) if seeded else 0.0
            if warm > 0:
                self._slowdown[model] = self._ema(self._slowdown.get(model), block_s / warm)

    def _ema(self, old: float | None, new: float) -> float:
        return new if old is None else old + self.EMA_WEIGHT * (new - old)

    def slowdown(self, model: str) -> float:
        """Streaming steps over warm-up steps of the same size (1.0 before any streaming step)."""
        with self._lock:
            return self._slowdown.get(model, 1.0)

    def batch_s(self, model: str) -> dict[int, float]:
        """Estimated seconds per batched step, by batch size (a new dict): the streaming moving average
        where that size has streamed, else the warm-up's time times the in-server slowdown."""
        with self._lock:
            slow = self._slowdown.get(model, 1.0)
            table = {k: v * slow for k, v in self._seeded.get(model, {}).items()}
            table.update(self._observed.get(model, {}))
            return table

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
                "in_server_slowdown": round(self.slowdown(model), 3),
                "measured_capacity": measured_capacity(table, self.shapes[model], self.utilization, self.max_batch)}
