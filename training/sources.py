"""Batch sources. Every batch is a pure function of ``(seed, rank, step)``, so a resumed run sees the
same batches as an uninterrupted one without saving any loader state.

- ``random-latents``: Gaussian latents ``[B, F, C, H, W]`` and text tokens, plus Gaussian audio latents
  and random action windows for models that have them (smoke runs, throughput).
- a folder of ``*.safetensors`` files, one per episode or clip set:
  ``latents`` ``[T, C, H, W]`` (one long episode; clips of F frames are cut at random starts) or
  ``[N, F', C, H, W]`` (N clips, F' >= F); optional ``text`` ``[L, text_dim]`` or ``[N, L, text_dim]``;
  any other key whose dim 0 (episodes) or dim 1 (clip sets) runs along time with ``T * r`` entries is cut
  with the clip (actions at the raw frame rate: r = temporal_upsample). Files may also carry
  ``first`` (bool ``[T]``, True where a new game starts): no clip crosses one.
"""
from __future__ import annotations

from pathlib import Path

import torch

from streamgen.checkpoints.io import load_safetensors


def _generator(seed: int, rank: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + rank * 10_007 + step) % (2**63))


class RandomLatents:
    def __init__(self, config, *, num_frames: int, batch: int, seed: int, rank: int = 0, text: bool = True) -> None:
        self.config, self.num_frames, self.batch, self.seed, self.rank, self.text = config, num_frames, batch, seed, rank, text

    def batch_at(self, step: int) -> dict[str, torch.Tensor]:
        c, g = self.config, _generator(self.seed, self.rank, step)
        out = {"latents": torch.randn(self.batch, self.num_frames, c.in_channels, c.latent_height, c.latent_width, generator=g)}
        b, f = self.batch, self.num_frames
        if c.audio is not None:  # joint models generate the audio of the same blocks
            out["audio"] = torch.randn(b, f // c.frames_per_block * c.audio_frames_per_block, c.audio.channels, generator=g)
        if c.actions is not None:  # one window of raw action rows per latent frame, as streamgen.actions builds
            rows = c.actions.window_frames * c.temporal_upsample
            out["keyboard"] = (torch.rand(b, f, rows, len(c.actions.keys), generator=g) < 0.3).float()
            out["mouse"] = torch.randn(b, f, rows, len(c.actions.mouse_axes), generator=g) * 0.1
        if self.text:
            out["text"] = torch.randn(b, c.text_len, c.text_dim, generator=g)
        return out


class LatentFolder:
    def __init__(self, folder: str | Path, config, *, num_frames: int, batch: int, seed: int, rank: int = 0) -> None:
        folder = Path(folder)
        files = sorted(folder.glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"no *.safetensors latent files in {folder}")
        self.items = [load_safetensors(f) for f in files]
        self.config, self.num_frames, self.batch, self.seed, self.rank = config, num_frames, batch, seed, rank
        self.starts = []  # (item, clip, start) of every valid clip
        for i, item in enumerate(self.items):
            lat = item.get("latents")
            if lat is None or lat.dim() not in (4, 5):
                raise ValueError(f"{files[i]}: expected 'latents' [T, C, H, W] or [N, F, C, H, W], got {None if lat is None else tuple(lat.shape)}")
            if tuple(lat.shape[-3:]) != (config.in_channels, config.latent_height, config.latent_width):
                raise ValueError(f"{files[i]}: latents of shape {tuple(lat.shape)} do not match the model's "
                                 f"{config.in_channels}x{config.latent_height}x{config.latent_width}")
            if lat.dim() == 5:
                self.starts += [(i, j, s) for j in range(lat.shape[0]) for s in range(lat.shape[1] - num_frames + 1)]
            else:
                first = item.get("first")
                for s in range(lat.shape[0] - num_frames + 1):
                    if first is None or not bool(first[s + 1 : s + num_frames].any()):
                        self.starts.append((i, -1, s))
        if not self.starts:
            raise ValueError(f"no clip of {num_frames} latent frames in {folder}")

    def _cut(self, item: dict, clip: int, start: int) -> dict[str, torch.Tensor]:
        lat = item["latents"] if clip < 0 else item["latents"][clip]  # [T, C, H, W]
        total = lat.shape[0]
        out = {"latents": lat[start : start + self.num_frames]}
        for key, value in item.items():
            if key in ("latents", "first"):
                continue
            v = value if clip < 0 or value.dim() == 0 or value.shape[0] != item["latents"].shape[0] else value[clip]
            if key == "text":
                out[key] = v if v.dim() == 2 else v[clip]
            elif v.dim() >= 1 and v.shape[0] % total == 0:
                r = v.shape[0] // total
                out[key] = v[start * r : (start + self.num_frames) * r]
        return out

    def batch_at(self, step: int) -> dict[str, torch.Tensor]:
        g = _generator(self.seed, self.rank, step)
        picks = torch.randint(len(self.starts), (self.batch,), generator=g).tolist()
        rows = [self._cut(self.items[i], j, s) for i, j, s in (self.starts[p] for p in picks)]
        return {k: torch.stack([r[k] for r in rows]).float() if rows[0][k].is_floating_point() else torch.stack([r[k] for r in rows])
                for k in rows[0]}


def make_source(spec: str, config, *, num_frames: int, batch: int, seed: int, rank: int = 0):
    if spec == "random-latents":
        return RandomLatents(config, num_frames=num_frames, batch=batch, seed=seed, rank=rank)
    if Path(spec).is_dir():
        return LatentFolder(spec, config, num_frames=num_frames, batch=batch, seed=seed, rank=rank)
    raise ValueError(f"data source {spec!r} is neither 'random-latents' nor a folder of latent files")
