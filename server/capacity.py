"""Admission by measured capacity: how many streams the engine thread can keep at their frame rate.

The engine steps every session of a device on one thread, round-robin. A stream of a model whose block
takes ``block_s`` to generate and plays for ``frames_per_block / fps`` seconds uses the share
``load = block_s * fps / frames_per_block`` of that thread. Streams stay real-time while the loads of
all admitted sessions sum to at most ``utilization`` (< 1 leaves room for jitter). ``block_s`` is
measured: seeded by the warm-up blocks, then a moving average of every block the engine generates, so a
machine that gets busier admits fewer new sessions. ``max_sessions`` (a setting) overrides it all.

``measured_capacity(...)`` is the public answer for one model (also in ``GET /v1/models``); a cluster
router can call it or read the endpoint.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class StreamShape:
    """What a model's stream must keep up with."""

    fps: float
    frames_per_block: int

    @property
    def block_period_s(self) -> float:
        return self.frames_per_block / self.fps


def measured_capacity(block_s: float | None, shape: StreamShape, utilization: float) -> int | None:
    """Sessions of one model that one engine thread keeps at frame rate (None before any measurement)."""
    if block_s is None:
        return None
    if block_s <= 0:
        return 1_000_000  # nothing measurable: not the limit (max_connections and the rate limits are)
    return max(0, math.floor(utilization * shape.block_period_s / block_s))


class Capacity:
    """Block-time estimates per model and the admission rule built on them (thread-safe)."""

    # Weight of a new block in the moving average: ~20 blocks of memory, so a load change shows within
    # a second or two of streaming, while a single slow block barely moves it.
    EMA_WEIGHT = 0.05

    def __init__(self, shapes: dict[str, StreamShape], *, utilization: float, override: int | None) -> None:
        self.shapes, self.utilization, self.override = shapes, utilization, override
        self._block_s: dict[str, float] = {}
        self._lock = threading.Lock()

    def seed(self, model: str, block_s: float) -> None:
        """Set the estimate outright (from the warm-up's steady-state blocks)."""
        with self._lock:
            self._block_s[model] = block_s

    def observe(self, model: str, block_s: float) -> None:
        """One generated block (called on the engine thread)."""
        with self._lock:
            old = self._block_s.get(model)
            self._block_s[model] = block_s if old is None else old + self.EMA_WEIGHT * (block_s - old)

    def block_s(self, model: str) -> float | None:
        with self._lock:
            return self._block_s.get(model)

    def load(self, model: str) -> float | None:
        """Share of the engine thread one stream of ``model`` uses (None: not measured yet)."""
        b = self.block_s(model)
        return None if b is None else b / self.shapes[model].block_period_s

    def sessions_for(self, model: str) -> int | None:
        """How many sessions of ``model`` alone fit (the override when set)."""
        if self.override is not None:
            return self.override
        return measured_capacity(self.block_s(model), self.shapes[model], self.utilization)

    def admits(self, running: list[str], model: str) -> bool:
        """Whether one more ``model`` session fits next to sessions of the models in ``running``."""
        if self.override is not None:
            return len(running) + 1 <= self.override
        if not running:
            return True  # one stream always runs, even of a model too slow for real time on this device
        loads = [self.load(m) for m in running + [model]]
        if any(v is None for v in loads):
            return False  # unmeasured: one stream at a time until a block has been timed
        return sum(loads) <= self.utilization  # type: ignore[arg-type]

    def describe(self, model: str) -> dict:
        b = self.block_s(model)
        return {"block_ms": None if b is None else round(b * 1000.0, 3),
                "measured_capacity": measured_capacity(b, self.shapes[model], self.utilization)}
