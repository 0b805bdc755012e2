"""Clips of consecutive steps from a recorded Atari dataset (see ``atari.py`` for the layout).

All episodes of a split are held in memory as uint8 (64x64: 12 KB of frames + 2 KB of audio per
step, so 60k steps take about 0.9 GB). Batches are drawn with a caller-given ``numpy`` generator,
so a trainer that seeds it from (seed, step) resumes with exactly the batches it would have seen.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from .atari import load_episode, load_meta


class AtariClips:
    """Random or sequential clips of ``clip_steps`` steps that never cross a game reset."""

    def __init__(self, root: str | os.PathLike, split: str = "train", clip_steps: int = 8,
                 max_episodes: int | None = None) -> None:
        self.meta = load_meta(root)
        if split not in self.meta["episodes"]:
            raise ValueError(f"unknown split {split!r}; dataset has {sorted(self.meta['episodes'])}")
        rels = self.meta["episodes"][split][:max_episodes]
        if not rels:
            raise ValueError(f"split {split!r} of {root} has no episodes")
        if clip_steps < 1:
            raise ValueError(f"clip_steps must be >= 1, got {clip_steps}")
        self.clip_steps = clip_steps
        eps = [load_episode(root, r) for r in rels]
        self.frames = [e["frames"] for e in eps]  # each [T, 3, H, W] uint8
        self.audio = [e["audio"] for e in eps]  # each [T, samples_per_step] uint8
        self.actions = [e["actions"] for e in eps]  # each [T] int16
        self.ram = [e["ram"] for e in eps]
        starts = []
        for i, e in enumerate(eps):
            first = e["first"]
            for s in range(0, len(first) - clip_steps + 1):
                if not first[s + 1: s + clip_steps].any():
                    starts.append((i, s))
        if not starts:
            raise ValueError(f"no clip of {clip_steps} steps fits in split {split!r} of {root}")
        self.starts = np.array(starts, dtype=np.int64)  # [N, 2] (episode, start)

    def __len__(self) -> int:
        return len(self.starts)

    def clip(self, index: int) -> dict[str, np.ndarray]:
        ep, s = self.starts[index]
        sl = slice(s, s + self.clip_steps)
        return {"frames": self.frames[ep][sl], "audio": self.audio[ep][sl].reshape(-1),  # [L, spp] -> [L*spp]
                "actions": self.actions[ep][sl], "ram": self.ram[ep][sl]}

    def batch(self, indices) -> dict[str, torch.Tensor]:
        clips = [self.clip(int(i)) for i in indices]
        return {k: torch.from_numpy(np.stack([c[k] for c in clips])) for k in clips[0]}

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """frames uint8 [B, L, 3, H, W], audio uint8 [B, L*spp], actions int16 [B, L], ram [B, L, 128]."""
        return self.batch(rng.integers(0, len(self.starts), size=batch_size))

    def sequential(self, stride: int | None = None) -> np.ndarray:
        """Indices of non-overlapping clips (every ``stride`` steps), for evaluation."""
        stride = stride or self.clip_steps
        keep = [i for i, (ep, s) in enumerate(self.starts) if s % stride == 0]
        return np.array(keep, dtype=np.int64)
