"""Plain-torch reference of the fused qk RMSNorm + RoPE + KV-cache write (also the CPU path).

Semantics are those of ``streamgen.models`` (``rms_norm`` over the full model dim in fp32, rounded to
the input dtype, then times the weight; ``apply_rope`` on adjacent channel pairs in fp32), restated
here because ``streamgen.kernels`` imports only torch and triton.
"""
from __future__ import annotations

import torch


def rms_norm_heads(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """RMSNorm of ``x [B, L, H, D]`` over all heads of a token (``H * D`` channels); None = no norm."""
    if weight is None:
        return x
    b, l, h, d = x.shape
    flat = x.reshape(b, l, h * d)  # [B, L, C]
    xf = flat.float()
    out = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * weight  # [B, L, C]
    return out.view(b, l, h, d)  # [B, L, H, D]


def rope_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs of ``x [B, L, H, D]`` by ``cos, sin [L, D/2]`` in fp32; x's dtype out."""
    b, l, h, d = x.shape
    pairs = x.float().reshape(b, l, h, d // 2, 2)  # [B, L, H, D/2, 2]
    x0, x1 = pairs[..., 0], pairs[..., 1]
    c = cos.float()[None, :, None, :]  # [1, L, 1, D/2]
    s = sin.float()[None, :, None, :]  # [1, L, 1, D/2]
    out = torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1)  # [B, L, H, D/2, 2]
    return out.reshape(b, l, h, d).to(x.dtype)  # [B, L, H, D]


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
    q_out = rope_pairs(rms_norm_heads(q, q_weight, eps), cos, sin)
    k_out = rms_norm_heads(k, k_weight, eps)
    if rotate_k:
        k_out = rope_pairs(k_out, cos, sin)
    k_cache[layer, :, slot_start : slot_start + length].copy_(k_out)
    v_cache[layer, :, slot_start : slot_start + length].copy_(v)
    return q_out
