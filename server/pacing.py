"""Wall-clock pacing for media tracks (no aiortc here, so it is unit-testable on its own); at the end, the
playout clock an avatar's video and voice share (its jitter buffer).

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
from collections import deque
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


# ----------------------------------------------------------------------------- the avatar's voice buffer
# Blocks an avatar's WebRTC output buffer may hold beyond ``ahead_blocks`` while a voice is live: room for the
# playout's margin (with none, a speech-paced stream has no slack for a block that comes late). Two: the
# margin can grow to 7 frames (0.44 s) for the avatar preset; the sound that runs into the next block needs
# that block generated, so the margin stays a frame under the room.
VOICE_AHEAD_BLOCKS = 2


@dataclass(kw_only=True)
class PlayoutConfig:
    # Media held back before it plays, and again after an underrun: the margin a late block (a loaded CPU, a
    # jittery voice coming in) may use up before the voice and the face pause together. webrtc.py sets it from
    # the stream's frame rate (docs/serving.md, Avatars); 0.2 s when built without.
    delay_s: float = 0.2
    # Each underrun widens the margin by this much, up to max_delay_s (None: delay_s, a fixed margin): a
    # jitterier voice or machine buys continuity with latency, as a receiver's jitter buffer does.
    grow_s: float = 0.0
    max_delay_s: float | None = None
    # Lateness still counted as on time (event-loop jitter), as PacerConfig.max_late_s.
    max_late_s: float = 0.015

    def __post_init__(self) -> None:
        for name in ("delay_s", "grow_s", "max_late_s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        if self.max_delay_s is not None and not self.max_delay_s >= self.delay_s:
            raise ValueError(f"max_delay_s={self.max_delay_s} must be >= delay_s={self.delay_s}")


class Playout:
    """One media clock shared by a stream's video and audio tracks: a jitter buffer for the avatar's voice.

    Media time ``m`` (seconds of stream: a frame's number / fps, an audio sample's number / rate) plays at
    ``base + m``. The first item plays ``delay_s`` after it arrived; an item that arrives later than its time
    (an underrun: the track waited for it) widens the margin by ``grow_s`` (up to ``max_delay_s``) and moves
    ``base`` so that it plays that margin after its arrival, for both tracks at once. So between underruns
    the voice is continuous and each block's sound plays with its frames, and a block may be up to the margin
    late without a gap; an underrun is one gap in both. Timestamps (``pts``) follow the play times:
    contiguous between underruns, jumping by the gap at one.
    """

    def __init__(self, config: PlayoutConfig) -> None:
        self.config = config
        self.base: float | None = None  # wall time at which media time 0 plays now
        self.start: float | None = None  # wall time of the first play (timestamp 0)
        self.underruns = 0
        self.gap_s = 0.0  # play time added by underruns
        self.late: deque[tuple[float, float]] = deque(maxlen=32)  # (media time, lateness) of recent underruns
        self.delay_s = config.delay_s  # the margin now

    def due(self, media_t: float) -> float | None:
        """Wall time at which ``media_t`` plays; None before the first item."""
        return None if self.base is None else self.base + media_t

    def arrived(self, media_t: float, now: float, waited: bool = True) -> float:
        """The item of ``media_t`` is in hand at ``now``: the wall time it plays at. ``waited``: the track had
        to wait for it (an underrun when late); a track that was itself late (the event loop) while its item
        lay ready catches up instead (the receiver's jitter buffer takes a short burst; a gap it would not)."""
        cfg = self.config
        if self.base is None:
            self.base = now + self.delay_s - media_t
            self.start = self.base + media_t
        elif waited and now - (self.base + media_t) > cfg.max_late_s:
            self.delay_s = min(self.delay_s + cfg.grow_s, max(cfg.max_delay_s or 0.0, cfg.delay_s))
            shift = now + self.delay_s - media_t - self.base
            self.late.append((round(media_t, 3), round(now - (self.base + media_t), 3)))
            self.base += shift
            self.underruns += 1
            self.gap_s += shift
        return self.base + media_t

    def pts(self, play_t: float, clock_rate: int) -> int:
        assert self.start is not None
        return round((play_t - self.start) * clock_rate)


async def played(playout: Playout, media_t: float, get: Callable[[], Awaitable[T]], *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> tuple[T, float, float]:
    """Wait for ``media_t``'s play time, then for its item (``get``), then (first item, underrun) until its new
    play time; return (item, play time, the moment the item was in hand)."""
    due = playout.due(media_t)
    if due is not None and due - clock() > 0:
        await sleep(due - clock())
    asked = clock()
    item = await get()
    got = clock()
    play = playout.arrived(media_t, got, waited=got - asked > playout.config.max_late_s)
    if play - clock() > 0:
        await sleep(play - clock())
    return item, play, got


async def replay(playout: Playout, media_t: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> float:
    """An item in hand whose media time is later than the one waited for (what lay between was dropped): wait
    for its own play time and return it."""
    play = playout.arrived(media_t, clock(), waited=False)
    if play - clock() > 0:
        await sleep(play - clock())
    return play
