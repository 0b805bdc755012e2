"""Plain-torch reference of attention over the valid slots of the rolling cache (also the CPU path).

Unmasked softmax attention in fp32; in relative-RoPE mode the keys are first rotated by their
slot's window position (per-slot ``key_cos, key_sin [Lk, D/2]``) by the model's own ``apply_rope``.
The softmax attention itself equals ``streamgen.models.attention.attention_reference`` unmasked (a
test checks they agree exactly); it is written out here because that module imports this package.
"""
from __future__ import annotations

import torch

from streamgen.models.rope import apply_rope


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
        k = apply_rope(k, key_cos, key_sin)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    logits = torch.einsum("bqhd,bkhd->bhqk", q.float(), k.float()) * scale  # [B, H, Lq, Lk]
    probs = logits.softmax(dim=-1)
    return torch.einsum("bhqk,bkhd->bqhd", probs, v.float()).to(q.dtype)  # [B, Lq, H, D]
