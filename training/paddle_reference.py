"""A pixel-free reference for action following: the controlled object's track predicted by a table of the
game's own dynamics, fitted on training episodes.

The table maps (the object's last step, rounded to a pixel; the keys' commanded direction for the last
``history`` actions) to the median next step seen in the training episodes. Rolled out from the same real
context and under the same actions as a world model, it says how closely the object's position can be
predicted from its visible past and the keys alone, which is the ceiling that a tolerance of a few pixels
over a long open-loop rollout leaves: the emulator's paddle also depends on state that the picture does
not show (sub-pixel position, the frame within the frame skip).

The frame-skip phase (the parity of the emulator's frame counter at a step boundary) is constant within a game
and visible without pixels of the emulator's state: a press from rest moves Pong's paddle 10 native rows in the
first step in one phase and 6 in the other. ``infer_phases`` reads it from the positions and keys, causally
(known from the game's first press from rest on); a table fitted with ``phases`` keys on it too.

Positions are those of ``data/locate.py`` on the dataset's frames (64x64), along the game's
``player_axis``; ``actions[t]`` was chosen after ``frames[t]`` and produced ``frames[t + 1]``.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from .data.games import GameSpec


@dataclass(frozen=True)
class DynamicsTable:
    """Median next step per (last step, recent commanded directions) and the range of positions seen."""

    history: int
    steps: dict[tuple[int, ...], float]
    low: float
    high: float
    # Whether the key starts with the frame-skip phase (0 / 1; -1 where it is not known yet).
    phased: bool = False

    def key(self, track: np.ndarray, signs: np.ndarray, t: int, phase: int = -1) -> tuple[int, ...]:
        """Key of the step from ``t`` to ``t + 1``: needs ``track[t - 1], track[t]`` and ``signs[t - history + 1 .. t]``."""
        head = (int(phase),) if self.phased else ()
        return head + (int(round(track[t] - track[t - 1])),) + tuple(int(signs[t - k]) for k in range(self.history))


# A press from rest moves the paddle 10 (one phase) or 6 (the other) native rows in its first step: 4.0 or
# 2.4 px on the 64-pixel-high dataset frame; the threshold lies between them.
PHASE_STEP_PX = 3.2
# "At rest": no commanded direction and no motion over this many steps before the press.
REST_STEPS = 3


def infer_phases(track: np.ndarray, signs: np.ndarray, first: np.ndarray, threshold: float = PHASE_STEP_PX) -> np.ndarray:
    """Per step ``[T]``, the frame-skip phase known from the game's history up to that step: 1 after a press from
    rest moved the paddle at least ``threshold`` px in its first step, 0 after one moved it less, -1 before any."""
    out = np.full(len(track), -1, np.int64)
    phase = -1
    for t in range(len(track)):
        if first[t]:
            phase = -1
        out[t] = phase
        if t < REST_STEPS or t + 1 >= len(track) or signs[t] == 0 or first[t - REST_STEPS + 1 : t + 2].any():
            continue
        before = track[t - REST_STEPS : t + 1]
        if (signs[t - REST_STEPS : t] != 0).any() or np.isnan(before).any() or np.isnan(track[t + 1]):
            continue
        if np.abs(np.diff(before)).max() < 0.5 and phase < 0:
            step = abs(track[t + 1] - track[t])
            if step >= 0.5:  # a paddle at a wall does not move: no evidence
                phase = int(step >= threshold)
    return out


def commanded_signs(spec: GameSpec, action_names: list[str], actions: np.ndarray) -> np.ndarray:
    """Per step, the direction the action commands along the player's axis (-1, 0, +1) ``[T]``."""
    table = np.array([spec.moves.get(name, 0) for name in action_names], np.int64)
    return table[np.asarray(actions, np.int64)]


def fit_dynamics_table(tracks: list[np.ndarray], signs: list[np.ndarray], firsts: list[np.ndarray],
                       history: int = 3, phases: list[np.ndarray] | None = None) -> DynamicsTable:
    """Fit on episodes: object positions ``[T]`` (NaN where not found), commanded signs ``[T]`` and new-game
    flags ``[T]``; steps that cross a new game or a missing position are left out. With ``phases`` (per
    episode ``[T]``, ``infer_phases``) the table also keys on the frame-skip phase (-1: not known yet)."""
    if history < 1:
        raise ValueError(f"history must be >= 1, got {history}")
    seen: dict[tuple[int, ...], list[float]] = defaultdict(list)
    probe = DynamicsTable(history, {}, 0.0, 0.0, phased=phases is not None)
    back = max(history - 1, 1)  # the key reaches back to frame t - 1 and action t - history + 1
    for i, (y, u, first) in enumerate(zip(tracks, signs, firsts)):
        for t in range(back, len(y) - 1):
            if first[t - back + 1 : t + 2].any() or np.isnan(y[t - 1 : t + 2]).any():
                continue
            phase = int(phases[i][t]) if phases is not None else -1
            seen[probe.key(y, u, t, phase)].append(float(y[t + 1] - y[t]))
            if phase >= 0:  # also under "phase not known": the fallback for unseen phased keys
                seen[probe.key(y, u, t, -1)].append(float(y[t + 1] - y[t]))
    if not seen:
        raise ValueError("no usable steps to fit the dynamics table (every position missing or episodes too short)")
    found = np.concatenate([y[~np.isnan(y)] for y in tracks])
    return DynamicsTable(history, {k: float(np.median(v)) for k, v in seen.items()}, float(found.min()), float(found.max()),
                         phased=phases is not None)


def predict_track(table: DynamicsTable, context: np.ndarray, signs: np.ndarray, frames: int, phase: int = -1) -> np.ndarray:
    """Roll the table out: ``context`` real positions ``[C]`` (C >= history), ``signs`` ``[C + frames - 1]`` for
    the steps that lead out of each context and predicted frame -> predicted positions ``[frames]``.
    An unseen key keeps the last step; a missing position holds the last one found; ``phase`` is the
    frame-skip phase known at the context's end (phased tables only)."""
    if len(context) < max(table.history, 2):
        raise ValueError(f"context of {len(context)} positions is shorter than the table's history {table.history}")
    if len(signs) < len(context) + frames - 1:
        raise ValueError(f"{len(signs)} commanded signs for {len(context)} context + {frames} frames")
    track = list(_fill_missing(np.asarray(context, np.float64)))
    for t in range(len(context) - 1, len(context) + frames - 1):
        y = np.asarray(track)
        step = table.steps.get(table.key(y, signs, t, phase))
        if step is None:  # an unseen phased key falls back to the phase-less entry, then to the last step
            step = table.steps.get(table.key(y, signs, t, -1), y[t] - y[t - 1])
        track.append(float(np.clip(y[t] + step, table.low, table.high)))
    return np.asarray(track[len(context):])


def _fill_missing(y: np.ndarray) -> np.ndarray:
    """Hold the last found position over NaNs (the first found one before it); all-NaN stays NaN."""
    if np.isnan(y).all():
        return y
    out = y.copy()
    idx = np.where(~np.isnan(out), np.arange(len(out)), 0)
    np.maximum.accumulate(idx, out=idx)
    out = out[idx]
    out[np.isnan(out)] = out[~np.isnan(out)][0]
    return out
