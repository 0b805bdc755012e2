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
    full-sequence forwards, or ``cache`` + ``plan`` for a streaming block, or ``rows`` for a batch of
    streaming blocks of different sessions (``streamgen.batch_step``): one context per batch row, each
    with its own cache, plan and RoPE, so each row writes and reads only its own session's cache.
    """

    rope: tuple[torch.Tensor, torch.Tensor] | None = None
    mask: torch.Tensor | None = None
    cache: RollingKVCache | None = None
    plan: CacheWrite | None = None
    key_rope: tuple[torch.Tensor, torch.Tensor] | None = None  # relative mode: cos / sin of the cached keys
    rows: tuple["AttnContext", ...] | None = None  # batched streaming: row r of the batch uses rows[r]

    @staticmethod
    def per_row(rows: list["AttnContext"]) -> "AttnContext":
        """The context of a batch whose row ``r`` streams under ``rows[r]`` (a single row is itself): the
        rows' RoPE stacked (``[B * L, D/2]``), and their key RoPE too when every row reads as many slots."""
        if len(rows) == 1:
            return rows[0]
        same = len({r.plan.valid_tokens for r in rows}) == 1
        key_rope = stack_rope([r.key_rope for r in rows]) if same and rows[0].key_rope is not None else None
        return AttnContext(rows=tuple(rows), rope=stack_rope([r.rope for r in rows]), key_rope=key_rope)


def stack_rope(ropes: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row cos / sin ``[L, D/2]`` of a batch's rows -> one table ``[B * L, D/2]`` (``apply_rope_rows``)."""
    if len(ropes) == 1:
        return ropes[0]
    return torch.cat([c for c, _ in ropes]), torch.cat([s for _, s in ropes])


def apply_rope_rows(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """RoPE on ``x [B, L, H, D]`` with cos / sin ``[L, D/2]`` (every row alike) or ``[B * L, D/2]``
    (``stack_rope``: each row its own positions)."""
    b, l, h, d = x.shape
    if rope[0].shape[0] == l:
        return apply_rope(x, *rope)
    return apply_rope(x.reshape(1, b * l, h, d), *rope).view(b, l, h, d)  # rows side by side: [1, B*L, H, D]


def cat_rows(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Rows ``[1, ...]`` -> ``[B, ...]`` (one row: itself, not a copy)."""
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)


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
        rows = (ctx,) if ctx.rows is None else ctx.rows  # batched sessions: one context per batch row
        if ctx.cache is None and ctx.rows is None:
            q, k, v = self.qkv(x)
            cos, sin = ctx.rope
            out = self.backend(apply_rope(q, cos, sin), apply_rope(k, cos, sin), v, ctx.mask)
        elif len(rows) != 1 and len(rows) != b:
            raise ValueError(f"{len(rows)} row contexts for a batch of {b}")
        elif self.backend.fused_cache:
            heads = (b, l, self.num_heads, self.head_dim)
            raw = (self.q(x).view(heads), self.k(x).view(heads), self.v(x).view(heads))  # [B, L, H, D] each
            out = cat_rows([self._cached_triton(*(t[r : r + 1] if len(rows) > 1 else t for t in raw), row, layer)
                            for r, row in enumerate(rows)])
        else:
            out = self._cached(*self.qkv(x), ctx, rows, layer)
        return self.o(out.reshape(b, l, self.num_heads * self.head_dim))  # [B, L, C]

    def _cached_triton(self, q, k, v, ctx: AttnContext, layer: int) -> torch.Tensor:
        """Backend "triton" over the cache, from the raw projections ``[B, L, H, D]``: one kernel norms and
        rotates q / k and writes k, v into the slots (k un-rotated in relative mode), a second attends
        over the valid slots (rotating keys)."""
        from streamgen.kernels.cache_attention import cache_attention
        from streamgen.kernels.qk_norm_rope import qk_norm_rope_cache_write

        cache, plan = ctx.cache, ctx.plan
        q = qk_norm_rope_cache_write(
            q, k, v, getattr(self.norm_q, "weight", None), getattr(self.norm_k, "weight", None), *ctx.rope,
            cache.k, cache.v, layer=layer, slot_start=plan.slot_start, rotate_k=not cache.relative,
            eps=getattr(self.norm_q, "eps", 0.0),
        )  # [B, L, H, D]
        keys, values = cache.read(layer, plan)
        rel = {}
        if cache.relative:
            kcos, ksin = ctx.key_rope
            rel = dict(key_cos=kcos, key_sin=ksin)
        return cache_attention(q, keys, values, **rel)  # [B, L, H, D]

    def _cached(self, q, k, v, ctx: AttnContext, rows: tuple[AttnContext, ...], layer: int) -> torch.Tensor:
        """Un-rotated q, k, v ``[B, L, H, D]`` over the cache (``rows``: one context for the whole batch, or
        one per row, each with its own cache): rotate q, write each row's k / v into its cache, attend to
        its valid slots, in one attention call when every row reads as many slots."""
        relative = rows[0].cache.relative
        q = apply_rope_rows(q, ctx.rope)
        if not relative:
            k = apply_rope_rows(k, ctx.rope)  # absolute mode stores rotated keys
        one = len(rows) == 1
        for r, row in enumerate(rows):
            row.cache.write(layer, row.plan, k if one else k[r : r + 1], v if one else v[r : r + 1])
        reads = [row.cache.read(layer, row.plan) for row in rows]
        if len({kr.shape[1] for kr, _ in reads}) == 1:
            keys, values = cat_rows([kr for kr, _ in reads]), cat_rows([vr for _, vr in reads])  # [B, Lk, H, D]
            if relative:
                keys = apply_rope_rows(keys, ctx.key_rope)
            return self.backend(q, keys, values)
        outs = []  # rows reading different numbers of slots (sessions still filling their windows)
        for r, (row, (keys, values)) in enumerate(zip(rows, reads)):
            outs.append(self.backend(q[r : r + 1], apply_rope(keys, *row.key_rope) if relative else keys, values))
        return torch.cat(outs)  # [B, L, H, D]


class CrossAttention(_Projections):
    """Text cross-attention; the K / V of the context are computed once per prompt (``context_kv``)."""

    def context_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, l, _ = context.shape
        k = self.norm_k(self.k(context)).view(b, l, self.num_heads, self.head_dim)  # [B, Lc, H, D]
        v = self.v(context).view(b, l, self.num_heads, self.head_dim)  # [B, Lc, H, D]
        return k, v

    def forward(self, x: torch.Tensor, kv) -> torch.Tensor:
        """``kv``: the context's ``(k, v)`` ``[B or 1, Lc, H, D]``, or a list with one ``(k, v)`` per batch
        row (batched sessions whose prompts differ in length)."""
        b, l, _ = x.shape
        q = self.norm_q(self.q(x)).view(b, l, self.num_heads, self.head_dim)  # [B, L, H, D]
        if isinstance(kv, list):
            if len(kv) != b:
                raise ValueError(f"{len(kv)} per-row text K / V for a batch of {b}")
            out = torch.cat([self.backend(q[r : r + 1], *row) for r, row in enumerate(kv)])  # [B, L, H, D]
        else:
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
