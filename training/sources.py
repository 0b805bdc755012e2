"""Batch sources. Every batch is a pure function of ``(seed, rank, step)``, so a resumed run sees the
same batches as an uninterrupted one without saving any loader state.

- ``random-latents``: Gaussian latents ``[B, F, C, H, W]`` and text tokens, plus Gaussian audio latents
  and random action windows for models that have them (smoke runs, throughput).
- a folder of ``*.safetensors`` files, one per episode: ``latents`` ``[T, C, H, W]`` (clips of F frames
  are cut at random starts); optional ``text`` ``[L, text_dim]`` (the episode's prompt tokens) and
  ``first`` (bool ``[T]``, True where a new game starts: no clip crosses one); every other key runs
  along time with ``T * r`` entries (a whole number per block) and is cut with the clip: ``audio``
  ``[T * na / n, Ca]`` for joint models, action windows ``keyboard`` ``[T, R, K]`` / ``mouse``
  ``[T, R, M]``, or anything the model takes by keyword.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from streamgen.checkpoints.io import load_safetensors


STATIC_KEYS = ("text", "first")  # per episode (text [L, text_dim]) or bookkeeping (first [T])


def _generator(seed: int, rank: int, step: int) -> torch.Generator:
    """A generator for one (seed, rank, step). The CPU generator keeps only 32 bits of its seed, so the
    triple is hashed into 32 bits (an arithmetic mix would repeat, e.g. rank 1 step 0 = rank 0 step k)."""
    digest = hashlib.blake2b(f"{seed}/{rank}/{step}".encode(), digest_size=4).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little"))


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
        self.starts: list[tuple[int, int]] = []  # (episode, start frame) of every valid clip
        for i, item in enumerate(self.items):
            self.starts += [(i, s) for s in self._starts(item, files[i])]
        if not self.starts:
            raise ValueError(f"no clip of {num_frames} latent frames in {folder}")

    def _starts(self, item: dict, path: Path) -> list[int]:
        cfg, f = self.config, self.num_frames
        lat = item.get("latents")
        if lat is None or lat.dim() != 4 or tuple(lat.shape[1:]) != (cfg.in_channels, cfg.latent_height, cfg.latent_width):
            raise ValueError(f"{path}: expected 'latents' [T, {cfg.in_channels}, {cfg.latent_height}, {cfg.latent_width}], "
                             f"got {None if lat is None else tuple(lat.shape)}")
        total = lat.shape[0]
        rates = []
        for key, value in item.items():
            if key in STATIC_KEYS:
                continue
            if value.dim() == 0 or (value.shape[0] * cfg.frames_per_block) % total:
                raise ValueError(f"{path}: {key!r} of shape {tuple(value.shape)} does not run along the {total} latent "
                                 f"frames at a whole number of entries per {cfg.frames_per_block}-frame block")
            rates.append(value.shape[0])
        first = item.get("first")
        out = []
        for s in range(total - f + 1):
            if any((s * n) % total or (f * n) % total for n in rates):
                continue  # a clip must start and end on whole entries of every stream (audio latents per frame)
            if first is None or not bool(first[s + 1 : s + f].any()):
                out.append(s)
        return out

    def _cut(self, item: dict, start: int) -> dict[str, torch.Tensor]:
        total, f = item["latents"].shape[0], self.num_frames
        out = {}
        for key, value in item.items():
            if key == "text":
                out[key] = value
            elif key not in STATIC_KEYS:
                n = value.shape[0]
                out[key] = value[start * n // total : (start + f) * n // total]  # [f * n / T, ...]
        return out

    def batch_at(self, step: int) -> dict[str, torch.Tensor]:
        g = _generator(self.seed, self.rank, step)
        picks = torch.randint(len(self.starts), (self.batch,), generator=g).tolist()
        rows = [self._cut(self.items[i], s) for i, s in (self.starts[p] for p in picks)]
        return {k: torch.stack([r[k] for r in rows]) for k in rows[0]}


def make_source(spec: str, config, *, num_frames: int, batch: int, seed: int, rank: int = 0):
    if spec == "random-latents":
        return RandomLatents(config, num_frames=num_frames, batch=batch, seed=seed, rank=rank)
    if Path(spec).is_dir():
        return LatentFolder(spec, config, num_frames=num_frames, batch=batch, seed=seed, rank=rank)
    raise ValueError(f"data source {spec!r} is neither 'random-latents' nor a folder of latent files")
