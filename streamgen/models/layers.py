"""Layers of the Wan2.1 block: self-attention (full, masked or over the rolling cache), text
cross-attention with a per-session K/V cache, and the block itself.

One block implementation serves teacher and student: bidirectional, block-causal or streaming is
chosen by the :class:`AttnContext` (mask or cache), never by a second copy of the model.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from streamgen.config import ModelConfig
from streamgen.models.action_modules import ActionModule
from streamgen.models.attention import DEFAULT_BACKEND, AttentionBackend
from streamgen.models.audio_in import AudioInModule
from streamgen.models.kv_cache import CacheWrite, RollingKVCache
from streamgen.models.mg2_action import Mg2ActionModule
from streamgen.models.norms import rms_norm
from streamgen.models.rope import apply_rope


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


@dataclass
class AttnContext:
    """How self-attention sees the sequence in one forward.

    ``rope``: cos / sin of the input tokens. Either ``mask`` (token mask or None = bidirectional) for
    full-sequence forwards, or ``cache`` + ``plan`` for a streaming block.
    """

    rope: tuple[torch.Tensor, torch.Tensor]
    mask: torch.Tensor | None = None
    cache: RollingKVCache | None = None
    plan: CacheWrite | None = None
    key_rope: tuple[torch.Tensor, torch.Tensor] | None = None  # relative mode: cos / sin of the cached keys


class _Projections(nn.Module):
    """The q / k / v / o projections and qk RMSNorms (over the full width) of a Wan attention layer."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        dim = config.dim
        self.num_heads, self.head_dim = config.num_heads, config.head_dim
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q = RMSNorm(dim, config.eps) if config.qk_norm else nn.Identity()
        self.norm_k = RMSNorm(dim, config.eps) if config.qk_norm else nn.Identity()
        self.backend: AttentionBackend = DEFAULT_BACKEND  # replaced by CausalDiT.set_attention_backend


class SelfAttention(_Projections):

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Un-rotated q, k, v ``[B, L, H, D]`` of ``x [B, L, C]`` (the joint audio-video layer calls this)."""
        b, l, _ = x.shape
        heads = (b, l, self.num_heads, self.head_dim)
        q = self.norm_q(self.q(x)).view(heads)  # [B, L, H, D]
        k = self.norm_k(self.k(x)).view(heads)  # [B, L, H, D]
        v = self.v(x).view(heads)  # [B, L, H, D]
        return q, k, v

    def forward(self, x: torch.Tensor, ctx: AttnContext, layer: int) -> torch.Tensor:
        b, l, _ = x.shape
        if ctx.cache is not None and self.backend.fused_cache:
            return self._cached_triton(x, ctx, layer)
        q, k, v = self.qkv(x)
        cos, sin = ctx.rope
        q = apply_rope(q, cos, sin)
        if ctx.cache is None:
            out = self.backend(q, apply_rope(k, cos, sin), v, ctx.mask)
        else:
            out = self._cached(q, k, v, ctx, layer)
        return self.o(out.reshape(b, l, self.num_heads * self.head_dim))  # [B, L, C]

    def _cached_triton(self, x: torch.Tensor, ctx: AttnContext, layer: int) -> torch.Tensor:
        """Backend "triton" over the cache: one kernel norms and rotates q / k and writes k, v into the
        slots (k un-rotated in relative mode), a second attends over the valid slots (rotating keys)."""
        from streamgen.kernels.cache_attention import cache_attention
        from streamgen.kernels.qk_norm_rope import qk_norm_rope_cache_write

        b, l, _ = x.shape
        heads = (b, l, self.num_heads, self.head_dim)
        cache, plan = ctx.cache, ctx.plan
        q = qk_norm_rope_cache_write(
            self.q(x).view(heads), self.k(x).view(heads), self.v(x).view(heads),  # [B, L, H, D] each
            getattr(self.norm_q, "weight", None), getattr(self.norm_k, "weight", None), *ctx.rope,
            cache.k, cache.v, layer=layer, slot_start=plan.slot_start, rotate_k=not cache.relative,
            eps=getattr(self.norm_q, "eps", 0.0),
        )  # [B, L, H, D]
        keys, values = cache.read(layer, plan)
        rel = {}
        if cache.relative:
            kcos, ksin = ctx.key_rope
            rel = dict(key_cos=kcos, key_sin=ksin)
        out = cache_attention(q, keys, values, **rel)  # [B, L, H, D]
        return self.o(out.reshape(b, l, self.num_heads * self.head_dim))  # [B, L, C]

    def _cached(self, q, k, v, ctx: AttnContext, layer: int) -> torch.Tensor:
        cache, plan = ctx.cache, ctx.plan
        if cache.relative:
            cache.write(layer, plan, k, v)  # un-rotated keys
            keys, values = cache.read(layer, plan)
            keys = apply_rope(keys, *ctx.key_rope)
        else:
            cache.write(layer, plan, apply_rope(k, *ctx.rope), v)
            keys, values = cache.read(layer, plan)
        return self.backend(q, keys, values)


class CrossAttention(_Projections):
    """Text cross-attention; the K / V of the context are computed once per prompt (``context_kv``)."""

    def context_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, l, _ = context.shape
        k = self.norm_k(self.k(context)).view(b, l, self.num_heads, self.head_dim)  # [B, Lc, H, D]
        v = self.v(context).view(b, l, self.num_heads, self.head_dim)  # [B, Lc, H, D]
        return k, v

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        b, l, _ = x.shape
        q = self.norm_q(self.q(x)).view(b, l, self.num_heads, self.head_dim)  # [B, L, H, D]
        k, v = kv
        if k.shape[0] != b:
            k, v = k.expand(b, *k.shape[1:]), v.expand(b, *v.shape[1:])
        out = self.backend(q, k, v)
        return self.o(out.reshape(b, l, self.num_heads * self.head_dim))  # [B, L, C]


class FeedForward(nn.Sequential):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__(
            nn.Linear(config.dim, config.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(config.ffn_dim, config.dim)
        )


class DiTBlock(nn.Module):
    """Wan2.1 block: modulated self-attention, cross-attention, modulated MLP; per-frame adaLN.

    With ``with_actions`` an action module (Matrix-Game 2.0 placement) sits between the cross-attention
    and the MLP; with ``with_audio_in`` the speech module (avatars) follows it. The block is split into stages (``modulations``, ``attn_input``, ``finish``) so the joint
    audio-video layer can run one attention over both streams with this same block.
    """

    def __init__(self, config: ModelConfig, *, with_actions: bool = False, action_index: int = 0,
                 with_audio_in: bool = False) -> None:
        super().__init__()
        self.eps = config.eps
        self.self_attn = SelfAttention(config)
        self.norm3 = nn.LayerNorm(config.dim, eps=config.eps, elementwise_affine=True) if config.cross_attn_norm else nn.Identity()
        self.cross_attn = CrossAttention(config)
        self.ffn = FeedForward(config)
        self.modulation = nn.Parameter(torch.randn(1, 6, config.dim) / config.dim**0.5)
        self.backend: AttentionBackend = DEFAULT_BACKEND  # its adaLN ops; replaced by CausalDiT.set_attention_backend
        self.action = None
        if with_actions:  # the module the config names (Matrix-Game 2.0's keeps per-session caches: action_index)
            mg2 = config.actions.module == "matrix-game-2"
            self.action = Mg2ActionModule(config, action_index) if mg2 else ActionModule(config)
        self.audio_in = AudioInModule(config) if with_audio_in else None

    def forward(
        self,
        x: torch.Tensor,
        e: torch.Tensor,
        text_kv: tuple[torch.Tensor, torch.Tensor],
        ctx: AttnContext,
        layer: int,
        actions=None,
        audio_in: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x ``[B, F, T, C]`` (frames x tokens per frame), e ``[B, F, 6, C]`` (per-frame modulation);
        ``audio_in`` ``[B, F, R, D]``: the frames' speech windows (None: the speech module is skipped)."""
        b, f, t, c = x.shape
        mod = self.modulations(e)
        y = self.self_attn(self.attn_input(x, mod).reshape(b, f * t, c), ctx, layer)  # [B, F*T, C]
        return self.finish(x, y.view(b, f, t, c), mod, text_kv, actions, audio_in)

    def modulations(self, e: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (self.modulation.float()[:, None] + e.float()).unbind(dim=2)  # 6 x [B, F, C]

    def attn_input(self, x: torch.Tensor, mod: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.backend.layer_norm_modulate(x, mod[0], mod[1], self.eps)

    def finish(self, x, y, mod, text_kv, actions=None, audio_in=None) -> torch.Tensor:
        """Everything after self-attention: x, y ``[B, F, T, C]`` (y = self-attention output)."""
        b, f, t, c = x.shape
        x = self.backend.gated_residual(x, y, mod[2])
        y = self.cross_attn(self.norm3(x).reshape(b, f * t, c), text_kv)  # [B, F*T, C]
        x = x + y.view(b, f, t, c)
        if self.action is not None and actions is not None:
            x = self.action(x, actions)
        if self.audio_in is not None and audio_in is not None:
            x = self.audio_in(x, audio_in)
        h = self.backend.layer_norm_modulate(x, mod[3], mod[4], self.eps)
        y = self.ffn(h)
        return self.backend.gated_residual(x, y, mod[5])
