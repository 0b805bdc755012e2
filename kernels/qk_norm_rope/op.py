"""``streamgen::qk_norm_rope_cache_write``: the torch op (mutates the two cache buffers in place).

Inference only: the cache write has no backward (training runs full sequences without a cache).
"""
from __future__ import annotations

from typing import Optional

import torch

from streamgen.kernels.runtime import use_triton
from streamgen.kernels.qk_norm_rope.reference import qk_norm_rope_cache_write_reference


@torch.library.custom_op("streamgen::qk_norm_rope_cache_write", mutates_args=("k_cache", "v_cache"))
def _op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_weight: Optional[torch.Tensor],
    k_weight: Optional[torch.Tensor],
    cos: torch.Tensor,
    sin: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    layer: int,
    slot_start: int,
    rotate_k: bool,
    eps: float,
) -> torch.Tensor:
    args = (q, k, v, q_weight, k_weight, cos, sin, k_cache, v_cache, layer, slot_start, rotate_k, eps)
    if use_triton(q, k, v, k_cache, v_cache):
        from streamgen.kernels.qk_norm_rope.triton_kernel import qk_norm_rope_cache_write_triton

        return qk_norm_rope_cache_write_triton(*args)
    return qk_norm_rope_cache_write_reference(*args)


@_op.register_fake
def _fake(q, k, v, q_weight, k_weight, cos, sin, k_cache, v_cache, layer, slot_start, rotate_k, eps):
    dtype = q.dtype if q_weight is None else torch.promote_types(q.dtype, q_weight.dtype)
    return q.new_empty(q.shape, dtype=dtype)  # [B, L, H, D]


def _check(q, k, v, cos, sin, k_cache, v_cache, layer, slot_start) -> None:
    if q.dim() != 4 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k, v must share one [B, L, H, D] shape; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    b, length, h, d = q.shape
    if d % 2:
        raise ValueError(f"head dim {d} must be even for RoPE pairs")
    if cos.shape != (length, d // 2) or sin.shape != cos.shape:
        raise ValueError(f"cos / sin must be [L, D/2] = {(length, d // 2)}; got {tuple(cos.shape)}, {tuple(sin.shape)}")
    if k_cache.dim() != 5 or k_cache.shape[1] != b or k_cache.shape[3:] != (h, d) or v_cache.shape != k_cache.shape:
        raise ValueError(f"caches must be [layers, {b}, slots, {h}, {d}]; got {tuple(k_cache.shape)}, {tuple(v_cache.shape)}")
    if not 0 <= layer < k_cache.shape[0]:
        raise ValueError(f"layer {layer} is outside the cache's {k_cache.shape[0]} layers")
    if slot_start < 0 or slot_start + length > k_cache.shape[2]:
        raise ValueError(f"slots [{slot_start}, {slot_start + length}) exceed the cache's {k_cache.shape[2]} slots")


def qk_norm_rope_cache_write(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_weight: torch.Tensor | None,
    k_weight: torch.Tensor | None,
    cos: torch.Tensor,
    sin: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    *,
    layer: int,
    slot_start: int,
    rotate_k: bool,
    eps: float,
) -> torch.Tensor:
    """Fused qk RMSNorm + RoPE + cache write; returns the normed, rotated q ``[B, L, H, D]``.

    q, k, v ``[B, L, H, D]`` (pre-norm projections); weights ``[H * D]`` or None (no norm);
    cos, sin ``[L, D/2]`` (already offset to the block's frames); caches ``[layers, B, slots, H, D]``
    written at ``[layer, :, slot_start : slot_start + L]``: k rotated when ``rotate_k`` (absolute
    RoPE mode), un-rotated otherwise (relative mode), v as is.
    """
    _check(q, k, v, cos, sin, k_cache, v_cache, layer, slot_start)
    return _op(q, k, v, q_weight, k_weight, cos, sin, k_cache, v_cache, layer, slot_start, rotate_k, eps)
