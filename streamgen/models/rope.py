"""3-D rotary position embedding of Wan2.1 (time / height / width split of the head dim).

Pairs of adjacent channels ``(x[2i], x[2i+1])`` are rotated (Wan's ``view_as_complex`` layout).
Angles are computed in float64 and stored as float32 cos / sin tables, so a slice with a frame
offset is bit-identical to the slice of the whole sequence (invariant 5).
"""
from __future__ import annotations

import torch

from streamgen.config import ModelConfig


def axis_angles(max_positions: int, axis_dim: int, theta: float) -> torch.Tensor:
    """Angles ``[max_positions, axis_dim // 2]`` (float64) for one axis of real width ``axis_dim``."""
    inv_freq = 1.0 / theta ** (torch.arange(0, axis_dim, 2, dtype=torch.float64) / axis_dim)
    return torch.outer(torch.arange(max_positions, dtype=torch.float64), inv_freq)


def token_angles(config: ModelConfig, frame_positions: torch.Tensor) -> torch.Tensor:
    """Angles ``[len(frame_positions) * tokens_per_frame, head_dim // 2]`` (float64), tokens in (f, h, w) order.

    ``frame_positions`` are the (possibly non-contiguous) time positions of the frames; height and width
    positions run over the token grid.
    """
    dt, dh, dw = config.rope_split
    gh, gw = config.grid_height, config.grid_width
    pos = frame_positions.to(torch.float64)
    inv_t = 1.0 / config.rope_theta ** (torch.arange(0, dt, 2, dtype=torch.float64) / dt)
    ang_t = torch.outer(pos, inv_t)  # [F, dt/2]
    ang_h = axis_angles(gh, dh, config.rope_theta)  # [gh, dh/2]
    ang_w = axis_angles(gw, dw, config.rope_theta)  # [gw, dw/2]
    f = pos.shape[0]
    ang = torch.cat(
        [
            ang_t[:, None, None, :].expand(f, gh, gw, dt // 2),
            ang_h[None, :, None, :].expand(f, gh, gw, dh // 2),
            ang_w[None, None, :, :].expand(f, gh, gw, dw // 2),
        ],
        dim=-1,
    )  # [F, gh, gw, head_dim/2]
    return ang.reshape(f * gh * gw, config.head_dim // 2)  # [F*gh*gw, head_dim/2]


class RopeTable:
    """Cos / sin per token for frame positions, cached on the device by (start, count)."""

    def __init__(self, config: ModelConfig, device: torch.device | str = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def for_frames(self, start: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Cos / sin ``[count * tokens_per_frame, head_dim // 2]`` for frames ``start .. start + count - 1``."""
        if self.config.rope_mode == "absolute" and start + count > self.config.rope_max_positions:
            raise ValueError(
                f"frame position {start + count - 1} is past the absolute RoPE table of "
                f"{self.config.rope_max_positions} frames; use rope_mode='relative' for unbounded streams"
            )
        key = (start, count)
        hit = self._cache.get(key)
        if hit is None:
            ang = token_angles(self.config, torch.arange(start, start + count))
            hit = (ang.cos().float().to(self.device), ang.sin().float().to(self.device))
            if len(self._cache) > 256:
                self._cache.clear()
            self._cache[key] = hit
        return hit

    def for_positions(self, positions: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """Cos / sin for an arbitrary tuple of frame positions (relative-mode cache reads)."""
        key = ("p",) + tuple(positions)
        hit = self._cache.get(key)
        if hit is None:
            ang = token_angles(self.config, torch.tensor(positions, dtype=torch.float64))
            hit = (ang.cos().float().to(self.device), ang.sin().float().to(self.device))
            if len(self._cache) > 256:
                self._cache.clear()
            self._cache[key] = hit
        return hit


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x [B, L, H, D]`` by per-token ``cos, sin [L, D/2]``; computed in fp32, returned in x's dtype."""
    b, l, h, d = x.shape
    pairs = x.float().reshape(b, l, h, d // 2, 2)  # [B, L, H, D/2, 2]
    x0, x1 = pairs[..., 0], pairs[..., 1]
    c = cos[None, :, None, :]
    s = sin[None, :, None, :]
    out = torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1)  # [B, L, H, D/2, 2]
    return out.reshape(b, l, h, d).to(x.dtype)  # [B, L, H, D]
