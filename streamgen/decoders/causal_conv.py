"""Causal convolutions whose streaming state is passed in and returned, never kept in the module.

A causal conv over time with kernel ``k`` needs the last ``k - 1`` input steps of the previous chunk.
Modules take a :class:`CacheCursor`: they read their previous tail from ``cursor.take()`` (``None``
on a fresh stream, meaning zeros, which is what padding the whole sequence with zeros does) and
hand their new tail to ``cursor.put()``. The cursor collects the new tails in call order, so a
stream's state is a plain tuple of tensors that the caller owns; the input state is never mutated,
so several streams (or a branch of one stream) can be decoded independently.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class CacheCursor:
    """Reads the previous tails in order and collects the new ones."""

    def __init__(self, previous: tuple[torch.Tensor, ...] | None) -> None:
        self.previous = previous
        self.new: list[torch.Tensor] = []
        self._i = 0

    def take(self) -> torch.Tensor | None:
        if self.previous is None:
            return None
        if self._i >= len(self.previous):
            raise ValueError(f"stream state holds {len(self.previous)} tensors, the model needs more")
        t = self.previous[self._i]
        self._i += 1
        return t

    def put(self, tail: torch.Tensor) -> None:
        self.new.append(tail)

    def finish(self) -> tuple[torch.Tensor, ...]:
        if self.previous is not None and self._i != len(self.previous):
            raise ValueError(f"stream state holds {len(self.previous)} tensors, the model used {self._i}")
        return tuple(self.new)


@dataclass(frozen=True)
class StreamState:
    """Explicit state of one decoding stream: the causal tails and the steps decoded so far."""

    tails: tuple[torch.Tensor, ...] | None = None
    steps: int = 0


def _with_tail(x: torch.Tensor, tail: torch.Tensor | None, k: int, dim: int) -> torch.Tensor:
    """Prepend the previous ``k - 1`` steps (zeros on a fresh stream) along ``dim``."""
    if tail is None:
        shape = list(x.shape)
        shape[dim] = k - 1
        tail = x.new_zeros(shape)
    return torch.cat([tail, x], dim=dim)


class CausalTimeConv1d(nn.Module):
    """Conv1d over [B, C, T], causal in T (audio)."""

    def __init__(self, cin: int, cout: int, kernel: int = 3) -> None:
        super().__init__()
        if kernel < 1:
            raise ValueError(f"kernel must be >= 1, got {kernel}")
        self.k = kernel
        self.conv = nn.Conv1d(cin, cout, kernel)

    def forward(self, x: torch.Tensor, cursor: CacheCursor) -> torch.Tensor:
        if self.k == 1:
            return self.conv(x)
        xp = _with_tail(x, cursor.take(), self.k, dim=2)  # [B, C, k-1+T]
        cursor.put(xp[:, :, xp.shape[2] - (self.k - 1):])
        return self.conv(xp)


class CausalFrameMix(nn.Module):
    """Per-pixel causal mixing over frames of [B, T, C, H, W] (a (kt, 1, 1) conv), video."""

    def __init__(self, cin: int, cout: int, kernel: int = 3) -> None:
        super().__init__()
        if kernel < 2:
            raise ValueError(f"temporal kernel must be >= 2, got {kernel}")
        self.k = kernel
        self.weight = nn.Parameter(torch.randn(kernel, cout, cin) / (cin * kernel) ** 0.5)
        self.bias = nn.Parameter(torch.zeros(cout))

    def forward(self, x: torch.Tensor, cursor: CacheCursor) -> torch.Tensor:
        t = x.shape[1]
        xp = _with_tail(x, cursor.take(), self.k, dim=1)  # [B, k-1+T, C, H, W]
        cursor.put(xp[:, xp.shape[1] - (self.k - 1):])
        out = self.bias.view(1, 1, -1, 1, 1)  # [C'] -> [1, 1, C', 1, 1]
        for j in range(self.k):  # tap j looks j steps into the past
            xs = xp[:, self.k - 1 - j: self.k - 1 - j + t]  # [B, T, C, H, W]
            out = out + torch.einsum("btchw,oc->btohw", xs, self.weight[j])
        return out


class FrameConv2d(nn.Conv2d):
    """Conv2d applied to every frame of [B, T, C, H, W] (same padding)."""

    def __init__(self, cin: int, cout: int, kernel: int = 3) -> None:
        super().__init__(cin, cout, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        b, t = x.shape[:2]
        y = super().forward(x.flatten(0, 1))  # [B, T, C, H, W] -> [B*T, C, H, W]
        return y.view(b, t, *y.shape[1:])  # [B*T, C', H, W] -> [B, T, C', H, W]


def pixel_shuffle_frames(x: torch.Tensor, r: int) -> torch.Tensor:
    """[B, T, C*r*r, H, W] -> [B, T, C, H*r, W*r]."""
    b, t = x.shape[:2]
    y = F.pixel_shuffle(x.flatten(0, 1), r)  # [B*T, C*r*r, H, W] -> [B*T, C, H*r, W*r]
    return y.view(b, t, *y.shape[1:])  # -> [B, T, C, H*r, W*r]


def pixel_unshuffle_frames(x: torch.Tensor, r: int) -> torch.Tensor:
    """[B, T, C, H*r, W*r] -> [B, T, C*r*r, H, W]."""
    b, t = x.shape[:2]
    y = F.pixel_unshuffle(x.flatten(0, 1), r)  # [B*T, C, H*r, W*r] -> [B*T, C*r*r, H, W]
    return y.view(b, t, *y.shape[1:])  # -> [B, T, C*r*r, H, W]


def save_module(module: nn.Module, path: str | os.PathLike, metadata: dict[str, str]) -> None:
    """state_dict + string metadata -> one safetensors file (tmp file + rename: never half-written)."""
    from streamgen.checkpoints.io import save_safetensors

    save_safetensors({k: v.detach().clone() for k, v in module.state_dict().items()}, path, metadata)


def load_module_file(path: str | os.PathLike, *, type_name: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a file written by :func:`save_module`, checking it holds a ``type_name``."""
    from streamgen.checkpoints.io import open_safetensors

    if not Path(path).exists():
        raise FileNotFoundError(f"no autoencoder weights at {path}")
    with open_safetensors(path) as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if meta.get("kind") != type_name:
        raise ValueError(f"{path} holds {meta.get('kind')!r}, expected {type_name!r}")
    return tensors, meta
