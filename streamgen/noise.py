"""Where a session's noise comes from, so a stream can be replayed exactly from its inputs.

A session asks its noise source for every Gaussian draw it makes, in a fixed order per block: the
block's starting noise (video, then audio for joint models), then one re-noise draw per denoising step
that has a next step (video, then audio), then, only when ``context_noise > 0``, the refill noise. The
last step's x0 is the block's output, so nothing is drawn for it. A source is any callable
``source(block_index, shape, device, dtype) -> tensor``; pass one to ``Pipeline.start(noise=...)``.

- :class:`SeededNoise` (the default, ``start(seed=...)``): one generator seeded once; block k's noise
  depends on every draw before it.
- :class:`BlockSeeds`: a seed per block (a list, or a function of the block index); block k's noise
  depends on its seed only, so any block can be regenerated on its own given the cache before it.
- :class:`RecordedNoise`: replays tensors given in draw order (recorded by :class:`NoiseRecorder`, or
  produced by another implementation to compare with it call by call).
"""
from __future__ import annotations

from typing import Callable, Protocol, Sequence

import torch


class NoiseSource(Protocol):
    def __call__(self, block: int, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor: ...


class SeededNoise:
    """Every draw from one ``torch.Generator`` on the session's device, seeded once with ``seed``."""

    def __init__(self, seed: int, device: torch.device | str = "cpu") -> None:
        self.seed = int(seed)
        self.generator = torch.Generator(device=device).manual_seed(self.seed)

    def __call__(self, block, shape, device, dtype):
        return torch.randn(shape, generator=self.generator, device=device, dtype=dtype)


class BlockSeeds:
    """Block k's draws from a generator re-seeded with ``seeds[k]`` (or ``seeds(k)``) at its first draw."""

    def __init__(self, seeds: Sequence[int] | Callable[[int], int]) -> None:
        self.seeds = seeds
        self.block: int | None = None
        self.generator: torch.Generator | None = None

    def seed_of(self, block: int) -> int:
        if callable(self.seeds):
            return int(self.seeds(block))
        if block >= len(self.seeds):
            raise IndexError(f"BlockSeeds: block {block} has no seed; {len(self.seeds)} seeds were given")
        return int(self.seeds[block])

    def __call__(self, block, shape, device, dtype):
        if block != self.block or self.generator is None:
            self.generator = torch.Generator(device=device).manual_seed(self.seed_of(block))
            self.block = block
        return torch.randn(shape, generator=self.generator, device=device, dtype=dtype)


class RecordedNoise:
    """Replays ``draws`` (tensors, or ``(block, tensor)`` pairs as a recorder keeps them) in order."""

    def __init__(self, draws: Sequence) -> None:
        self.draws = [d[1] if isinstance(d, tuple) else d for d in draws]
        self.index = 0

    def __call__(self, block, shape, device, dtype):
        if self.index >= len(self.draws):
            raise IndexError(f"RecordedNoise: draw {self.index} (block {block}) asked for, only {len(self.draws)} recorded")
        out = self.draws[self.index]
        if tuple(out.shape) != tuple(shape):
            raise ValueError(f"RecordedNoise: draw {self.index} has shape {tuple(out.shape)}, the session needs {tuple(shape)}")
        self.index += 1
        return out.to(device=device, dtype=dtype)


class NoiseRecorder:
    """Wraps a source and keeps ``(block, tensor)`` of every draw in ``draws``."""

    def __init__(self, source: NoiseSource) -> None:
        self.source = source
        self.draws: list[tuple[int, torch.Tensor]] = []

    def __call__(self, block, shape, device, dtype):
        out = self.source(block, shape, device, dtype)
        self.draws.append((block, out.detach().clone()))
        return out


def noise_source(seed: int, noise, device) -> NoiseSource:
    """``start()``'s ``noise`` argument as a source: None -> :class:`SeededNoise` (``seed``); a list of
    ints -> :class:`BlockSeeds`; a callable -> itself."""
    if noise is None:
        return SeededNoise(seed, device)
    if isinstance(noise, (list, tuple)) and all(isinstance(s, int) for s in noise):
        return BlockSeeds(noise)
    if callable(noise):
        return noise
    raise TypeError(f"noise={type(noise).__name__}: expected None, a list of per-block seeds or a noise source callable")
