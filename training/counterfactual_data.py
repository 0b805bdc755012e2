"""Data of the counterfactual evaluation: fresh episodes, emulator branches under fixed keys, de-duplication.

The ``val`` and ``test`` splits are episodes recorded here with their own seeds (``data/atari.py``
``SPLIT_IDS``), never written to disk for training. While one is recorded, the emulator is branched at the
end of each context (``cloneState`` after the context's last frame is read, ``restoreState`` after the
branch): the branch plays a fixed key sequence that does not look at the ball (``key_sequence``), so the
target frames are what the real game shows under those keys from the exact state of the context. The
branches leave the recording's frames, actions and RAM unchanged, but not its sound (``restoreState`` does
not restore the sound chip's output buffer), so the episode the model is primed from is recorded a second
time without branches (tests check both).

De-duplication: every frame is hashed (``frame_hashes``); a target frame that occurs in the training episodes
(or, for the test split, among the validation split's frames) is never scored (``Branch.new``), and a
context with no new target frame is dropped. Frames, not whole contexts: Pong repeats itself so much that
20-94 % of the 64 target frames of a context occur among the 60,000 training frames (16 validation
contexts), so dropping every context with one repeat would drop them all.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .data.atari import RecordConfig, episode_seed, preprocess, record_episode, step_frames
from .data.games import game_spec

# Segments of the key sequence: (kind, lengths in steps); every kind is drawn with equal chance.
# Taps (a key for one or two steps), reversals (one way, then the other for as long), holds of several
# lengths (the paddle's acceleration and its top speed) and rests (its deceleration and lag).
TAP_STEPS = (1, 2)
REVERSAL_STEPS = (2, 3, 4, 6)
HOLD_STEPS = (2, 4, 8, 16)
REST_STEPS = (1, 2, 4, 8)
KINDS = ("tap", "reversal", "hold", "rest")


def key_sequence(rng: np.random.Generator, steps: int, up: int, down: int, idle: int) -> np.ndarray:
    """``steps`` action indices ``[steps]`` from the fixed, ball-independent key distribution."""
    out: list[int] = []
    while len(out) < steps:
        kind = KINDS[int(rng.integers(len(KINDS)))]
        key = up if rng.random() < 0.5 else down
        other = down if key == up else up
        if kind == "tap":
            out += [key] * int(rng.choice(TAP_STEPS)) + [idle] * int(rng.choice(REST_STEPS))
        elif kind == "reversal":
            n = int(rng.choice(REVERSAL_STEPS))
            out += [key] * n + [other] * n
        elif kind == "hold":
            out += [key] * int(rng.choice(HOLD_STEPS))
        else:
            out += [idle] * int(rng.choice(REST_STEPS))
    return np.asarray(out[:steps], np.int64)


def frame_hashes(frames: np.ndarray) -> list[bytes]:
    """One digest per frame of ``[T, ...]`` uint8 (any layout, as long as it is the same for both sides)."""
    return [hashlib.blake2b(np.ascontiguousarray(f).tobytes(), digest_size=16).digest() for f in frames]


def training_hashes(data: str | Path, meta: dict) -> set[bytes]:
    """Hashes of every frame of the training episodes (``[T, 3, H, W]`` as stored)."""
    seen: set[bytes] = set()
    for rel in meta["episodes"]["train"]:
        with np.load(Path(data) / rel) as e:
            seen.update(frame_hashes(e["frames"]))
    return seen


@dataclass
class Branch:
    """One context of an evaluation episode and the emulator's frames under the counterfactual keys."""

    episode: int
    end: int  # index of the context's last frame in the episode
    actions: np.ndarray  # [F] counterfactual action indices; actions[0] is taken after frame ``end``
    frames: np.ndarray  # [F, 3, H, W] uint8: what the emulator showed after each counterfactual action
    parity: int  # the emulator's frame counter mod 2 at the branch (the frame-skip phase, for checks)
    episode_data: dict = field(repr=False, default_factory=dict)
    new: np.ndarray | None = None  # [F] bool: target frames seen in neither training nor (test) validation


def record_split(meta: dict, split: str, episodes: int, steps: int, *, context: int, frames: int,
                 per_episode: int, key_seed: int = 0) -> list[Branch]:
    """Record ``episodes`` fresh ``split`` episodes of ``steps`` steps and branch each at ``per_episode``
    evenly spread context ends; branches that reach a game over are left out."""
    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    cfg = RecordConfig(**meta["record"])
    spec = game_spec(meta["game"])
    names = meta["action_names"]
    up, down = (names.index(next(n for n, m in spec.moves.items() if m == s and n in names)) for s in (-1, 1))
    out: list[Branch] = []
    for i in range(episodes):
        ends = set(np.linspace(context - 1, steps - 2, per_episode).round().astype(int).tolist())
        rng = np.random.default_rng([key_seed, ["val", "test"].index(split), i])
        mine: list[Branch] = []

        def branch(ale, legal, t):
            if t not in ends:
                return
            keys = key_sequence(rng, frames, up, down, 0)
            state = ale.cloneState()
            parity = ale.getEpisodeFrameNumber() % 2
            shots = []
            for a in keys:
                step_frames(ale, legal[a], cfg.frame_skip)
                if ale.game_over():
                    break
                shots.append(preprocess(ale.getScreenRGB(), spec, cfg))
            ale.restoreState(state)
            if len(shots) == frames:
                mine.append(Branch(i, t, keys, np.stack(shots), int(parity)))

        branched = record_episode(cfg, steps, episode_seed(meta["seed"], split, i), on_frame=branch)
        ep = record_episode(cfg, steps, episode_seed(meta["seed"], split, i))  # its sound untouched by branching
        if not np.array_equal(branched["frames"], ep["frames"]):
            raise RuntimeError(f"{split} episode {i}: branching the emulator changed the recording's frames")
        for b in mine:
            b.episode_data = ep
        out += mine
    return out


def dedup(branches: list[Branch], seen: set[bytes]) -> tuple[list[Branch], int, int]:
    """Mark each branch's target frames not in ``seen`` (``Branch.new``, ANDed with an earlier mark) and drop
    branches without one; returns the kept branches, how many were dropped and how many frames were repeats."""
    repeats = 0
    for b in branches:
        mark = np.array([h not in seen for h in frame_hashes(b.frames)])
        b.new = mark if b.new is None else b.new & mark
        repeats += int((~b.new).sum())
    kept = [b for b in branches if b.new.any()]
    return kept, len(branches) - len(kept), repeats


def context_ok(b: Branch, context: int) -> bool:
    """The context lies inside one game (no new game among its frames after the first)."""
    first = b.episode_data["first"]
    return b.end - context + 1 >= 0 and not first[b.end - context + 2 : b.end + 1].any()
