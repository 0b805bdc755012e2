"""Actions of world models: the per-model :class:`ActionSpec`, wire events -> per-raw-frame rows, and
the window of raw rows each latent frame sees.

Rows are kept at the raw video frame rate (Matrix-Game 2.0); raw frame ``r`` spans
``[r, r + 1) * 1000 / fps`` ms of the stream's media clock. A key is *down in raw frame r* if it is held
at the frame's start or pressed at any moment inside it (a tap shorter than a frame is not lost); the
mouse row of frame ``r`` is the sum of the deltas stamped inside it, times ``mouse_scale``.

A session calls :meth:`ActionState.block` once per block with the wire events received since the
previous block. Their ``t_ms`` is read on one of two clocks (``ActionState.clock``):

- ``"client"`` (the wire protocol's: any client clock, e.g. Unix ms): the first timed event is anchored to
  the start of the block it arrives for, and later events keep their spacing from it. Every event is
  applied to the block it arrives for (at most one block of latency): when a batch would end past the
  block, the anchor moves so its last event falls in the block's last frame; when a whole batch is
  earlier than the block, the anchor moves so its first event falls at the block start. ``t_ms`` of 0
  or None means "now" (the block start).
- ``"stream"`` (scripts, tests): ``t_ms`` is the media clock itself. Events stamped before the block are
  applied at its first frame; events stamped after it wait for their block.

Held keys, the clock anchor and waiting events live in the explicit :class:`ActionState` the session owns.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Iterable, Sequence

import numpy as np

from streamgen.config import ModelConfig


@dataclass(frozen=True)
class ActionSpec:
    """What a world model listens to."""

    keys: tuple[str, ...]  # W3C KeyboardEvent.code names, in the order of the keyboard vector
    mouse_axes: tuple[str, ...]  # wire field names ("dx", "dy") in the order of the mouse vector; "-dy" negates
    mouse_scale: float  # model units per pixel of motion
    raw_fps: float  # raw (decoded) video frames per second: the action rate
    raw_per_latent: int  # raw frames per latent frame
    window_frames: int  # latent frames of raw rows each latent frame sees (its own included)

    @classmethod
    def from_config(cls, config: ModelConfig) -> "ActionSpec":
        a = config.actions
        if a is None:
            raise ValueError(f"model {config.name!r} takes no actions (config.actions is None)")
        return cls(a.keys, a.mouse_axes, a.mouse_scale, config.fps, config.temporal_upsample, a.window_frames)

    @property
    def window_rows(self) -> int:
        """Raw rows in one latent frame's window."""
        return self.window_frames * self.raw_per_latent

    def null_rows(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The null action (no key down, no motion) for ``count`` raw frames: ``[count, K]``, ``[count, M]``."""
        return np.zeros((count, len(self.keys)), np.float32), np.zeros((count, len(self.mouse_axes)), np.float32)

    def frame_start_ms(self, raw_frame: int) -> float:
        return float(Fraction(raw_frame * 1000) / Fraction(self.raw_fps))

    def describe(self) -> dict[str, Any]:
        return {"keys": list(self.keys), "mouse_axes": list(self.mouse_axes), "mouse_scale": self.mouse_scale,
                "action_fps": self.raw_fps}


@dataclass(frozen=True)
class ActionEvent:
    kind: str  # "key" or "mouse"
    t_ms: float | None
    key: str = ""
    down: bool = False
    delta: tuple[float, ...] = ()


def parse_event(event: dict, spec: ActionSpec) -> ActionEvent | None:
    """One wire event -> :class:`ActionEvent` (None for a key the model does not know)."""
    if not isinstance(event, dict):
        raise ValueError(f"action event {event!r} is not a dict")
    kind = event.get("kind")
    t = event.get("t_ms")
    if t is not None and not (isinstance(t, (int, float)) and math.isfinite(t)):
        raise ValueError(f"action event {event!r}: t_ms={t!r} is not a finite number")
    if kind == "key":
        key, down = event.get("key"), event.get("down")
        if not isinstance(key, str) or not isinstance(down, bool):
            raise ValueError(f"key event {event!r} needs 'key' (str) and 'down' (bool)")
        if key not in spec.keys:
            return None  # browsers send every key; the model only hears its own
        return ActionEvent("key", t, key=key, down=down)
    if kind == "mouse":
        delta = []
        for axis in spec.mouse_axes:
            name = axis.removeprefix("-")
            value = event.get(name, 0.0)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"mouse event {event!r}: {name}={value!r} is not a finite number")
            delta.append(-float(value) if axis.startswith("-") else float(value))
        return ActionEvent("mouse", t, delta=tuple(delta))
    raise ValueError(f"action event {event!r}: kind={kind!r} is not 'key' or 'mouse'")


def rows_from_events(
    spec: ActionSpec, held: frozenset[str], events: Iterable[ActionEvent], raw_start: int, raw_count: int
) -> tuple[np.ndarray, np.ndarray, frozenset[str], list[ActionEvent]]:
    """Rows of raw frames ``raw_start .. raw_start + raw_count - 1``.

    Returns keyboard ``[raw_count, K]`` (multi-hot), mouse ``[raw_count, M]``, the keys held after the
    last frame, and the events stamped at or after the end of the span (for later blocks).
    """
    start_ms, end_ms = spec.frame_start_ms(raw_start), spec.frame_start_ms(raw_start + raw_count)
    now, later = [], []
    for i, ev in enumerate(events):
        t = start_ms if ev.t_ms is None or ev.t_ms < start_ms else ev.t_ms
        (later if t >= end_ms else now).append((t, i, ev))
    now.sort(key=lambda item: (item[0], item[1]))  # time order, arrival order on ties
    keyboard, mouse = spec.null_rows(raw_count)
    index = {k: j for j, k in enumerate(spec.keys)}
    state = set(held)
    cursor = 0
    for r in range(raw_count):
        frame_end = spec.frame_start_ms(raw_start + r + 1)
        down_in_frame = set(state)
        while cursor < len(now) and now[cursor][0] < frame_end:
            ev = now[cursor][2]
            cursor += 1
            if ev.kind == "key":
                if ev.down:
                    state.add(ev.key)
                    down_in_frame.add(ev.key)
                else:
                    state.discard(ev.key)
            else:
                mouse[r] += np.asarray(ev.delta, np.float32) * np.float32(spec.mouse_scale)
        for key in down_in_frame:
            keyboard[r, index[key]] = 1.0
    return keyboard, mouse, frozenset(state), [ev for _, _, ev in sorted(later, key=lambda item: item[1])]


def latent_windows(spec: ActionSpec, history: np.ndarray, rows: np.ndarray, frames: int) -> np.ndarray:
    """Window of raw rows per latent frame: ``[frames, window_rows, D]``.

    ``rows`` ``[frames * raw_per_latent, D]`` are the block's rows; ``history`` ``[(window_frames - 1) *
    raw_per_latent, D]`` the rows just before it (null before the stream start). Latent frame ``f`` of the
    block sees raw rows ``[(f - window_frames + 1) * rpl, (f + 1) * rpl)``.
    """
    rpl = spec.raw_per_latent
    seq = np.concatenate([history, rows], axis=0)  # [(W - 1 + frames) * rpl, D]
    return np.stack([seq[f * rpl : f * rpl + spec.window_rows] for f in range(frames)])  # [frames, W*rpl, D]


@dataclass
class ActionWindows:
    """What the model's action modules receive for one block (numpy, float32)."""

    keyboard: np.ndarray  # [frames, window_rows, K]
    mouse: np.ndarray  # [frames, window_rows, M]
    raw_keyboard: np.ndarray  # [frames * raw_per_latent, K] rows of the block itself
    raw_mouse: np.ndarray  # [frames * raw_per_latent, M]


MAX_PENDING = 4096  # stream clock: events waiting for a later block (the oldest are dropped beyond this)


@dataclass
class ActionState:
    """Per-session action state: held keys, clock anchor, waiting events, recent rows for windows."""

    spec: ActionSpec
    clock: str = "client"  # "client" or "stream" (see the module doc)
    held: frozenset[str] = frozenset()
    pending: list[ActionEvent] = field(default_factory=list)
    offset_ms: float | None = None  # client clock: client t_ms minus stream ms
    next_raw: int = 0  # first raw frame of the next block
    history_keyboard: np.ndarray | None = None
    history_mouse: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.clock not in ("client", "stream"):
            raise ValueError(f"ActionState: clock={self.clock!r} must be 'client' or 'stream'")
        if self.history_keyboard is None:
            self.history_keyboard, self.history_mouse = self.spec.null_rows(self.spec.window_rows - self.spec.raw_per_latent)

    def _to_stream_clock(self, events: list[ActionEvent], raw_count: int) -> list[ActionEvent]:
        """Client clock -> stream clock for one block's batch (anchor kept, moved only to fit the block)."""
        spec = self.spec
        start, end = spec.frame_start_ms(self.next_raw), spec.frame_start_ms(self.next_raw + raw_count)
        last = spec.frame_start_ms(self.next_raw + raw_count - 1)
        times = [e.t_ms for e in events if e.t_ms]
        if times:
            lo, hi = min(times), max(times)
            if self.offset_ms is None:
                self.offset_ms = lo - start
            if hi - self.offset_ms >= end:
                self.offset_ms = hi - last
            elif hi - self.offset_ms < start:
                self.offset_ms = lo - start
        out = []
        for e in events:
            t = min(e.t_ms - self.offset_ms, last) if e.t_ms else None
            out.append(ActionEvent(e.kind, t, e.key, e.down, e.delta))
        return out

    def block(self, events: Iterable[dict] | None, latent_frames: int) -> ActionWindows:
        """Consume the wire events for the next block of ``latent_frames`` latent frames."""
        spec = self.spec
        parsed = [e for e in (parse_event(ev, spec) for ev in (events or [])) if e is not None]
        count = latent_frames * spec.raw_per_latent
        if self.clock == "client":
            parsed = self._to_stream_clock(parsed, count)
        kb, ms, self.held, pending = rows_from_events(spec, self.held, self.pending + parsed, self.next_raw, count)
        self.pending = pending[-MAX_PENDING:]
        windows = ActionWindows(
            latent_windows(spec, self.history_keyboard, kb, latent_frames),
            latent_windows(spec, self.history_mouse, ms, latent_frames),
            kb,
            ms,
        )
        keep = self.history_keyboard.shape[0]
        if keep:
            self.history_keyboard = np.concatenate([self.history_keyboard, kb])[-keep:]
            self.history_mouse = np.concatenate([self.history_mouse, ms])[-keep:]
        self.next_raw += count
        return windows


# ----------------------------------------------------------------------------- key rows -> wire events
RELEASE_LEAD_MS = 1e-3  # a key released for frame r is released just before r starts (still down in r - 1)


def events_for_rows(spec: ActionSpec, rows, raw_start: int = 0, held: frozenset[str] = frozenset()) -> list[dict]:
    """Key rows ``[T, K]`` (1 = held during raw frame ``raw_start + i``, in ``spec.keys`` order) -> wire key
    events at the stream clock, as :func:`events_for_key_sets` stamps them."""
    names = [frozenset(k for k, v in zip(spec.keys, row) if v > 0.5) for row in rows]
    events, _ = events_for_key_sets(spec, names, raw_start, held)
    return events


def events_for_key_sets(spec: ActionSpec, sets: Sequence[frozenset[str]], raw_start: int,
                        held: frozenset[str]) -> tuple[list[dict], frozenset[str]]:
    """Wire key events (stream clock) that hold exactly ``sets[i]`` during raw frame ``raw_start + i``,
    given the keys ``held`` before; returns the events (time order) and the keys held after. A key is
    down in a frame if held at its start or pressed inside it, so presses are stamped at the frame start
    and releases just before it, in the previous frame's span: feed each block the events stamped inside
    its span (:func:`split_by_block`)."""
    events = []
    for i, want in enumerate(sets):
        t = spec.frame_start_ms(raw_start + i)
        for key in sorted(held - want):
            events.append({"kind": "key", "key": key, "down": False, "t_ms": t - RELEASE_LEAD_MS})
        for key in sorted(want - held):
            events.append({"kind": "key", "key": key, "down": True, "t_ms": t})
        held = want
    return events, held


def split_by_block(spec: ActionSpec, events: list[dict], raw_per_block: int, blocks: int, raw_start: int = 0) -> list[list[dict]]:
    """Events grouped by the block whose raw-frame span holds their stamp (earlier stamps go to the first)."""
    out: list[list[dict]] = [[] for _ in range(blocks)]
    for ev in events:
        b = 0
        while b + 1 < blocks and ev["t_ms"] >= spec.frame_start_ms(raw_start + (b + 1) * raw_per_block):
            b += 1
        out[b].append(ev)
    return out
