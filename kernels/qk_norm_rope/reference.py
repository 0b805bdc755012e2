"""Plain-torch reference of the fused qk RMSNorm + RoPE + KV-cache write (also the CPU path).

Built from the model's own ops (``rms_norm`` over the full model dim in fp32, rounded to the input
dtype, then times the weight; ``apply_rope`` on adjacent channel pairs in fp32), so the kernel is
checked against exactly what the model computes.
"""
from __future__ import annotations

import torch

from streamgen.models.norms import rms_norm
from streamgen.models.rope import apply_rope


def rms_norm_heads(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """RMSNorm of ``x [B, L, H, D]`` over all heads of a token (``H * D`` channels); None = no norm."""
    if weight is None:
        return x
    b, l, h, d = x.shape
    out = rms_norm(x.reshape(b, l, h * d), weight, eps)  # [B, L, H, D] -> [B, L, C]
    return out.view(b, l, h, d)  # [B, L, C] -> [B, L, H, D]


def qk_norm_rope_cache_write_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_weight: torch.Tensor | None,
    k_weight: torch.Tensor | None,
    cos: torch.Tensor,
    sin: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    layer: int,
    slot_start: int,
    rotate_k: bool,
    eps: float,
) -> torch.Tensor:
    """Normalise and rotate q; normalise k (rotate it too when ``rotate_k``); write k, v into the cache.

    q, k, v: ``[B, L, H, D]``; cos, sin: ``[L, D/2]``; caches: ``[layers, B, slots, H, D]``, written at
    ``[layer, :, slot_start : slot_start + L]`` in place. Returns the normed, rotated q ``[B, L, H, D]``.
    """
    length = q.shape[1]
    q_out = apply_rope(rms_norm_heads(q, q_weight, eps), cos, sin)
    k_out = rms_norm_heads(k, k_weight, eps)
    if rotate_k:
        k_out = apply_rope(k_out, cos, sin)
    k_cache[layer, :, slot_start : slot_start + length].copy_(k_out)
    v_cache[layer, :, slot_start : slot_start + length].copy_(v)
    return q_out
