"""Plain-torch reference of attention over the valid slots of the rolling cache (also the CPU path).

Unmasked softmax attention in fp32; in relative-RoPE mode the keys are first rotated by their
slot's window position (adjacent channel pairs, per-slot ``key_cos, key_sin [Lk, D/2]``), rounded to
the key dtype as ``apply_rope`` does.
"""
from __future__ import annotations

import torch


def rotate_keys(k: torch.Tensor, key_cos: torch.Tensor, key_sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``k [B, Lk, H, D]`` pairwise by ``[Lk, D/2]`` tables in fp32; k's dtype out."""
    b, lk, h, d = k.shape
    pairs = k.float().reshape(b, lk, h, d // 2, 2)  # [B, Lk, H, D/2, 2]
    k0, k1 = pairs[..., 0], pairs[..., 1]
    c = key_cos.float()[None, :, None, :]  # [1, Lk, 1, D/2]
    s = key_sin.float()[None, :, None, :]  # [1, Lk, 1, D/2]
    out = torch.stack((k0 * c - k1 * s, k0 * s + k1 * c), dim=-1)  # [B, Lk, H, D/2, 2]
    return out.reshape(b, lk, h, d).to(k.dtype)  # [B, Lk, H, D]


def cache_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_cos: torch.Tensor | None = None,
    key_sin: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """q ``[B, Lq, H, D]``, k / v ``[B, Lk, H, D]`` -> ``[B, Lq, H, D]`` in q's dtype (fp32 math)."""
    if key_cos is not None:
        k = rotate_keys(k, key_cos, key_sin)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    logits = torch.einsum("bqhd,bkhd->bhqk", q.float(), k.float()) * scale  # [B, H, Lq, Lk]
    probs = logits.softmax(dim=-1)
    return torch.einsum("bhqk,bkhd->bqhd", probs, v.float()).to(q.dtype)  # [B, Lq, H, D]
