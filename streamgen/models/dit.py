"""``CausalDiT``: the Wan2.1 diffusion transformer, usable bidirectionally (teacher), with a
block-causal mask (training) or block by block over a rolling KV cache (streaming student).

Parameter names follow the original Wan2.1 layout so its checkpoints load with few renames.
Latents are ``[B, F, C, H, W]`` (frame-major, the natural order for streaming); timesteps ``[B, F]``.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from streamgen.config import ModelConfig
from streamgen.models.kv_cache import RollingKVCache
from streamgen.models.layers import AttnContext, DiTBlock
from streamgen.models.norms import layer_norm_modulate
from streamgen.models.rope import RopeTable

TextKV = list[tuple[torch.Tensor, torch.Tensor]]


def sinusoidal_embedding(dim: int, t: torch.Tensor) -> torch.Tensor:
    """Wan's timestep embedding ``[..., dim]`` = [cos | sin], computed in float64 (fractional t allowed)."""
    half = dim // 2
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=t.device) / half)
    angles = t.to(torch.float64)[..., None] * freqs
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1).float()


class Head(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.eps = config.eps
        self.head = nn.Linear(config.dim, config.out_channels * math.prod(config.patch))
        self.modulation = nn.Parameter(torch.randn(1, 2, config.dim) / config.dim**0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """x ``[B, F, T, C]``, e ``[B, F, C]`` (time embedding before projection)."""
        mod = (self.modulation.float()[:, None] + e.float()[:, :, None]).unbind(dim=2)  # 2 x [B, F, C]
        return self.head(layer_norm_modulate(x, mod[0], mod[1], self.eps))


class CausalDiT(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.patch_embedding = nn.Conv3d(c.in_channels, c.dim, kernel_size=c.patch, stride=c.patch)
        self.text_embedding = nn.Sequential(nn.Linear(c.text_dim, c.dim), nn.GELU(approximate="tanh"), nn.Linear(c.dim, c.dim))
        self.time_embedding = nn.Sequential(nn.Linear(c.freq_dim, c.dim), nn.SiLU(), nn.Linear(c.dim, c.dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(c.dim, 6 * c.dim))
        self.blocks = nn.ModuleList(DiTBlock(c) for _ in range(c.num_layers))
        self.head = Head(c)
        self.attention_backend = "sdpa"
        self._rope: RopeTable | None = None
        self.init_weights()

    def init_weights(self) -> None:
        """Wan's init: xavier linears, zero output head (a fresh model predicts zero velocity)."""
        if next(self.parameters()).device.type == "meta":
            return
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.xavier_uniform_(self.patch_embedding.weight.flatten(1))
        nn.init.zeros_(self.head.head.weight)
        nn.init.zeros_(self.head.head.bias)

    # ----- helpers ------------------------------------------------------------------------
    @property
    def rope(self) -> RopeTable:
        device = self.patch_embedding.weight.device
        if self._rope is None or self._rope.device != device:
            self._rope = RopeTable(self.config, device)
        return self._rope

    def encode_text(self, text: torch.Tensor) -> TextKV:
        """Per-layer cross-attention K / V of encoder tokens ``[B, Ltext, text_dim]`` (cache per prompt)."""
        ctx = self.text_embedding(text)  # [B, Ltext, C]
        return [blk.cross_attn.context_kv(ctx) for blk in self.blocks]

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        b, f = x.shape[:2]
        tokens = self.patch_embedding(x.transpose(1, 2))  # [B, C, F, gh, gw]
        return tokens.flatten(3).permute(0, 2, 3, 1)  # [B, F, T, C]

    def _time(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.time_embedding(sinusoidal_embedding(self.config.freq_dim, t).to(self.patch_embedding.weight.dtype))  # [B, F, C]
        e0 = self.time_projection(e).unflatten(-1, (6, self.config.dim))  # [B, F, 6, C]
        return e, e0

    def _unpatchify(self, out: torch.Tensor) -> torch.Tensor:
        c = self.config
        b, f = out.shape[:2]
        pt, ph, pw = c.patch
        out = out.view(b, f, c.grid_height, c.grid_width, pt, ph, pw, c.out_channels)  # [B, F, gh, gw, pt, ph, pw, Co]
        out = out.permute(0, 1, 4, 7, 2, 5, 3, 6)  # [B, F, pt, Co, gh, ph, gw, pw]
        return out.reshape(b, f * pt, c.out_channels, c.latent_height, c.latent_width)  # [B, F, Co, H, W]

    def _run(self, x, t, text_kv: TextKV, ctx: AttnContext) -> torch.Tensor:
        h = self._embed(x)
        e, e0 = self._time(t)
        for i, blk in enumerate(self.blocks):
            h = blk(h, e0, text_kv[i], ctx, i)
        return self._unpatchify(self.head(h, e))

    # ----- forwards -------------------------------------------------------------------------
    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        text_kv: TextKV,
        *,
        positions: tuple[int, ...] | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Full-sequence forward: bidirectional (``mask=None``) or masked (token mask ``[L, L]``).

        x ``[B, F, C, H, W]``, t ``[B, F]`` -> velocity ``[B, F, C, H, W]``. ``positions``: RoPE time
        position of each frame (default ``0 .. F-1``; teacher forcing repeats them for both halves).
        """
        f = x.shape[1]
        positions = tuple(range(f)) if positions is None else tuple(positions)
        if len(positions) != f:
            raise ValueError(f"positions has {len(positions)} entries for {f} frames")
        rope = self.rope.for_positions(positions)
        ctx = AttnContext(rope=rope, mask=mask, backend=self.attention_backend)
        return self._run(x, t, text_kv, ctx)

    def forward_cached(
        self, x: torch.Tensor, t: torch.Tensor, text_kv: TextKV, cache: RollingKVCache, start_frame: int
    ) -> torch.Tensor:
        """One streaming block: x ``[B, n, C, H, W]`` at absolute frames ``start_frame ..``; writes its K / V
        into the cache (overwriting on a re-run) and attends to everything the cache holds."""
        n = x.shape[1]
        plan = cache.plan(start_frame, n)
        if cache.relative:
            rope = self.rope.for_positions(plan.query_positions)
        else:
            rope = self.rope.for_frames(start_frame, n)
        ctx = AttnContext(rope=rope, cache=cache, plan=plan, rope_table=self.rope, backend=self.attention_backend)
        return self._run(x, t, text_kv, ctx)

    def forward_teacher_forcing(
        self, clean: torch.Tensor, noisy: torch.Tensor, t: torch.Tensor, text_kv: TextKV, mask: torch.Tensor
    ) -> torch.Tensor:
        """Training forward on ``[clean | noisy]`` (both ``[B, F, C, H, W]``); returns the noisy half's output.

        ``t`` ``[B, F]`` is the noisy half's timesteps; clean frames are at t = context_noise.
        """
        f = clean.shape[1]
        x = torch.cat([clean, noisy], dim=1)  # [B, 2F, C, H, W]
        t_clean = torch.full_like(t, self.config.context_noise)
        tt = torch.cat([t_clean, t], dim=1)  # [B, 2F]
        out = self.forward(x, tt, text_kv, positions=tuple(range(f)) * 2, mask=mask)
        return out[:, f:]
