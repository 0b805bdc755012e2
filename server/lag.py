"""How far a stream runs behind real time, for the per-block telemetry.

A stream that generates slower than its frame rate falls further behind every block. Over WebRTC the
pacer stamps frames with the wall clock, so the viewer sees gaps; over WebSocket frames keep their media
timestamps, so a player that follows them plays in slow motion. Either way the client is told how far
behind the stream is (``telemetry.behind_ms``) and can decide (skip ahead, reconnect, show a warning).
"""
from __future__ import annotations


class StreamLag:
    """Wall time since the stream's first block (pauses excluded) minus the media time it has produced."""

    def __init__(self, fps: float) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps!r}")
        self.fps = fps
        self.frames = 0  # frames produced so far
        self.anchor: float | None = None  # wall time at which media time 0 would have played

    def reanchor(self) -> None:
        """After a pause: the time spent paused is not lag; the next block starts the clock again."""
        self.anchor = None

    def block(self, ready_t: float, frames: int) -> float:
        """Seconds behind real time of the block that came out of the model at ``ready_t`` (>= 0)."""
        media_t = self.frames / self.fps
        if self.anchor is None:
            self.anchor = ready_t - media_t
        self.frames += frames
        return max(0.0, ready_t - self.anchor - media_t)
