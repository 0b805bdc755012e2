"""3-D rotary position embedding of Wan2.1 (time / height / width split of the head dim).

Pairs of adjacent channels ``(x[2i], x[2i+1])`` are rotated (Wan's ``view_as_complex`` layout).
Angles are computed in float64 and stored as float32 cos / sin tables, so a slice with a frame
offset is bit-identical to the slice of the whole sequence (invariant 5).
"""
from __future__ import annotations

import torch

from streamgen.config import ModelConfig

# Position tuples whose index tensor a table keeps (teacher forcing and relative reads reuse a few per
# model); the whole map is dropped when it overflows, so memory stays bounded on long streams.
POSITION_INDEX_CACHE_SIZE = 512


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
    """Cos / sin per token for frame positions, composed on the device from per-axis tables.

    Time, height and width angles are concatenated (not summed), so a token's cos / sin is the
    concatenation of the three axes' cos / sin. The time table of ``rope_max_positions`` frames and the
    height x width table live on the device; a block's table is a slice (absolute mode) or a gather by a
    cached device index (relative mode, arbitrary positions): no per-block host-to-device copy.
    """

    def __init__(self, config: ModelConfig, device: torch.device | str = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)
        dt, dh, dw = config.rope_split
        gh, gw = config.grid_height, config.grid_width
        self._time_positions = config.rope_max_positions
        self._t_len = 0  # the time table grows by doubling up to rope_max_positions (some presets allow 2**24)
        self._grow(min(self._time_positions, 1024) - 1)
        ang_h = axis_angles(gh, dh, config.rope_theta)  # [gh, dh/2]
        ang_w = axis_angles(gw, dw, config.rope_theta)  # [gw, dw/2]
        ang_hw = torch.cat(
            [ang_h[:, None, :].expand(gh, gw, dh // 2), ang_w[None, :, :].expand(gh, gw, dw // 2)], dim=-1
        ).reshape(gh * gw, (dh + dw) // 2)  # [T, (dh+dw)/2]
        self._hw = (ang_hw.cos().float().to(self.device), ang_hw.sin().float().to(self.device))
        self._index: dict[tuple[int, ...], torch.Tensor] = {}

    def _grow(self, last: int) -> None:
        if last < self._t_len:
            return
        self._t_len = min(self._time_positions, max(2 * self._t_len, last + 1))
        dt = self.config.rope_split[0]
        ang_t = axis_angles(self._t_len, dt, self.config.rope_theta)  # [P, dt/2]
        self._t = (ang_t.cos().float().to(self.device), ang_t.sin().float().to(self.device))

    def _compose(self, t_cos: torch.Tensor, t_sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f, tokens = t_cos.shape[0], self._hw[0].shape[0]
        out = []
        for t_part, hw_part in ((t_cos, self._hw[0]), (t_sin, self._hw[1])):
            both = torch.cat(
                [t_part[:, None, :].expand(f, tokens, t_part.shape[-1]), hw_part[None].expand(f, tokens, hw_part.shape[-1])],
                dim=-1,
            )  # [F, T, D/2]
            out.append(both.reshape(f * tokens, -1))  # [F*T, D/2]
        return out[0], out[1]

    def _check(self, last: int) -> None:
        if last >= self._time_positions:
            mode = self.config.rope_mode
            hint = "; use rope_mode='relative' for unbounded streams" if mode == "absolute" else ""
            raise ValueError(
                f"frame position {last} is past the RoPE table of {self._time_positions} frames "
                f"(rope_max_positions){hint}"
            )
        self._grow(last)

    def for_frames(self, start: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Cos / sin ``[count * tokens_per_frame, head_dim // 2]`` for frames ``start .. start + count - 1``."""
        self._check(start + count - 1)
        return self._compose(self._t[0][start : start + count], self._t[1][start : start + count])

    def for_positions(self, positions: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """Cos / sin for an arbitrary tuple of frame positions (teacher forcing, relative-mode reads)."""
        positions = tuple(int(p) for p in positions)
        if positions and positions == tuple(range(positions[0], positions[0] + len(positions))):
            return self.for_frames(positions[0], len(positions))
        self._check(max(positions))
        index = self._index.get(positions)
        if index is None:
            if len(self._index) > POSITION_INDEX_CACHE_SIZE:
                self._index.clear()
            index = self._index[positions] = torch.tensor(positions, dtype=torch.long, device=self.device)
        return self._compose(self._t[0][index], self._t[1][index])


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x [B, L, H, D]`` by per-token ``cos, sin [L, D/2]``; computed in fp32, returned in x's dtype."""
    b, l, h, d = x.shape
    pairs = x.float().reshape(b, l, h, d // 2, 2)  # [B, L, H, D/2, 2]
    if pairs.stride(-1) != 1 or any(st % 2 for st in pairs.stride()[:-1]):
        pairs = pairs.contiguous()  # a complex view needs (re, im) adjacent and pair-aligned strides
    # (x0 + i x1)(cos + i sin) = (x0 cos - x1 sin) + i (x0 sin + x1 cos): the pair rotation as one complex
    # multiply (the same products; ~10x faster on a CPU than computing and stacking the two halves).
    rot = torch.complex(cos.float(), sin.float())[None, :, None, :]  # [L, D/2] -> [1, L, 1, D/2]
    out = torch.view_as_real(torch.view_as_complex(pairs) * rot)  # [B, L, H, D/2, 2]
    return out.reshape(b, l, h, d).to(x.dtype)  # [B, L, H, D]
