"""Attention dispatch: one call site, several backends.

Backends:
- ``reference``: plain matmul + softmax in fp32 (the ground truth of the tests);
- ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` (CPU default, GPU fallback);
- ``flex``: FlexAttention with a block mask built from a frame mask (training on GPU);
- ``triton``: the rolling-cache kernel of ``streamgen.kernels`` (imported lazily);
- ``flash``: flash-attn when installed (unmasked calls only).
"""
from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F

BACKENDS = ("reference", "sdpa", "flex", "triton", "flash")


def available_backends() -> list[str]:
    names = ["reference", "sdpa"]
    if hasattr(torch.nn.attention, "flex_attention") or importlib.util.find_spec("torch.nn.attention.flex_attention"):
        names.append("flex")
    if importlib.util.find_spec("triton") is not None:
        names.append("triton")
    if importlib.util.find_spec("flash_attn") is not None and torch.cuda.is_available():
        names.append("flash")
    return names


def attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """q ``[B, Lq, H, D]``, k / v ``[B, Lk, H, D]``, mask ``[Lq, Lk]`` bool -> ``[B, Lq, H, D]`` (fp32 math)."""
    scale = q.shape[-1] ** -0.5
    logits = torch.einsum("bqhd,bkhd->bhqk", q.float(), k.float()) * scale  # [B, H, Lq, Lk]
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.einsum("bhqk,bkhd->bqhd", probs, v.float()).to(q.dtype)


def _sdpa(q, k, v, mask):
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask
    )  # [B, H, Lq, D]
    return out.transpose(1, 2)  # [B, Lq, H, D]


def _flex(q, k, v, mask):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    if mask is None:
        return _sdpa(q, k, v, None)
    dense = mask

    def mask_mod(b, h, q_idx, kv_idx):
        return dense[q_idx, kv_idx]

    block_mask = create_block_mask(mask_mod, None, None, q.shape[1], k.shape[1], device=q.device)
    out = flex_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), block_mask=block_mask)
    return out.transpose(1, 2)  # [B, Lq, H, D]


def _triton(q, k, v, mask):
    if mask is not None:
        return _sdpa(q, k, v, mask)
    from streamgen.kernels.cache_attention import cache_attention

    return cache_attention(q, k, v)


def _flash(q, k, v, mask):
    if mask is not None or q.device.type != "cuda":
        return _sdpa(q, k, v, mask)
    from flash_attn import flash_attn_func

    return flash_attn_func(q, k, v)


_DISPATCH = {"reference": attention_reference, "sdpa": _sdpa, "flex": _flex, "triton": _triton, "flash": _flash}


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask: torch.Tensor | None = None, backend: str = "sdpa"
) -> torch.Tensor:
    """Scaled dot-product attention ``[B, Lq, H, D]`` through the named backend."""
    try:
        fn = _DISPATCH[backend]
    except KeyError:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {BACKENDS}") from None
    return fn(q, k, v, mask)
