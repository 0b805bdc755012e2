"""Wall-clock pacing for media tracks (no aiortc here, so it is unit-testable on its own).

aiortc sends a frame the moment ``recv()`` returns; it has no pacer of its own. A track therefore
waits for each frame's deadline on a wall clock: frame ``n`` is due at ``anchor_t + (n - anchor_n) *
period``. When a frame comes out later than ``max_late_s`` (the producer stalled, the loop hiccupped)
the clock re-anchors at the moment it is emitted: the stream resumes at its normal cadence instead of
bursting out the frames it "owes", and its timestamps jump forward by the stall. Timestamps are thus
always within ``max_late_s`` of the wall-clock moment a frame leaves, and they never drift: between
stalls they are computed from the anchor, not accumulated from sleeps.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, TypeVar

T = TypeVar("T")


@dataclass(kw_only=True)
class PacerConfig:
    period_s: float  # frame duration: 1 / fps for video, 0.02 for 20 ms audio frames
    clock_rate: int  # timestamp units per second: 90000 for RTP video, the sample rate for audio
    # Lateness beyond which the clock re-anchors. 15 ms keeps every timestamp within 20 ms of the
    # wall clock (the design target) while tolerating ordinary event-loop jitter of a few ms.
    max_late_s: float = 0.015

    def __post_init__(self) -> None:
        if not self.period_s > 0:
            raise ValueError(f"period_s={self.period_s} must be > 0")
        if self.clock_rate <= 0:
            raise ValueError(f"clock_rate={self.clock_rate} must be > 0")


class Pacer:
    """Deadline clock of one track. ``deadline()`` says when the next frame is due; ``emit(now)``
    records that it left at ``now`` and returns its timestamp in ``clock_rate`` units."""

    def __init__(self, config: PacerConfig) -> None:
        self.config = config
        self.start_t: float | None = None  # wall time of the first frame (timestamp 0)
        self._anchor_t = 0.0
        self._anchor_n = 0
        self.n = 0  # frames emitted
        self.last_pts = -1
        self.reanchors = 0

    def deadline(self) -> float | None:
        """Wall time at which the next frame is due; None before the first frame (due at once)."""
        if self.start_t is None:
            return None
        return self._anchor_t + (self.n - self._anchor_n) * self.config.period_s

    def emit(self, now: float) -> int:
        cfg = self.config
        if self.start_t is None:
            self.start_t = self._anchor_t = now
            self._anchor_n = 0
        else:
            due = self.deadline()
            assert due is not None
            if now - due > cfg.max_late_s:
                # Stalled: resume the cadence from now rather than catching up with a burst.
                self._anchor_t, self._anchor_n = now, self.n
                self.reanchors += 1
        t = self._anchor_t + (self.n - self._anchor_n) * cfg.period_s
        pts = round((t - self.start_t) * cfg.clock_rate)
        if pts <= self.last_pts:  # rounding can never make timestamps repeat
            pts = self.last_pts + 1
        self.last_pts = pts
        self.n += 1
        return pts

    def reset(self) -> None:
        """Forget the clock (timestamps restart at 0); used when a track is re-created."""
        self.__init__(self.config)  # type: ignore[misc]


async def paced(pacer: Pacer, get: Callable[[], Awaitable[T]], *, clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> tuple[T, int, float, float]:
    """Wait for the next deadline, then for the next item; return (item, pts, emitted_at, due_at).

    ``due_at`` is the deadline (or the emit time for the first frame / after a stall), so
    ``emitted_at - max(due_at, item_ready)`` is the pacer's own overhead for that frame.
    """
    due = pacer.deadline()
    if due is not None:
        delay = due - clock()
        if delay > 0:
            await sleep(delay)
    item = await get()
    now = clock()
    pts = pacer.emit(now)
    return item, pts, now, (due if due is not None else now)
