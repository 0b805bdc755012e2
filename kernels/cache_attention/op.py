"""``streamgen::cache_attention``: the torch op (inference; no backward) and its checked Python entry."""
from __future__ import annotations

from typing import Optional

import torch

from streamgen.kernels.runtime import use_triton
from streamgen.kernels.cache_attention.reference import cache_attention_reference


@torch.library.custom_op("streamgen::cache_attention", mutates_args=())
def _op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_cos: Optional[torch.Tensor],
    key_sin: Optional[torch.Tensor],
    scale: Optional[float],
) -> torch.Tensor:
    if use_triton(q, k, v):
        from streamgen.kernels.cache_attention.triton_kernel import cache_attention_triton

        return cache_attention_triton(q, k, v, key_cos, key_sin, scale)
    return cache_attention_reference(q, k, v, key_cos, key_sin, scale)


@_op.register_fake
def _fake(q, k, v, key_cos, key_sin, scale):
    return q.new_empty(q.shape)  # [B, Lq, H, D]


def cache_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    key_cos: torch.Tensor | None = None,
    key_sin: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Attention of q ``[B, Lq, H, D]`` over k / v ``[B, Lk, H, D]`` (no mask) -> ``[B, Lq, H, D]``.

    k / v are typically ``cache.k[layer, :, :valid_tokens]`` views. ``key_cos, key_sin [Lk, D/2]``
    (relative RoPE mode) rotate the keys inside the kernel; ``scale`` defaults to ``D ** -0.5``.
    """
    if q.dim() != 4 or k.dim() != 4 or v.shape != k.shape:
        raise ValueError(f"q must be [B, Lq, H, D] and k, v one [B, Lk, H, D]; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    b, _, h, d = q.shape
    if k.shape[0] != b or k.shape[2:] != (h, d):
        raise ValueError(f"k / v shape {tuple(k.shape)} does not match q's batch, heads, head dim {(b, h, d)}")
    if not 16 <= d <= 256:
        raise ValueError(f"head dim {d} is outside the supported 16..256")
    if k.shape[1] < 1:
        raise ValueError("k / v hold no keys (Lk = 0)")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"q, k, v dtypes must match; got {q.dtype}, {k.dtype}, {v.dtype}")
    if (key_cos is None) != (key_sin is None):
        raise ValueError("pass both key_cos and key_sin, or neither")
    if key_cos is not None:
        if d % 2 or key_cos.shape != (k.shape[1], d // 2) or key_sin.shape != key_cos.shape:
            raise ValueError(f"key_cos / key_sin must be [Lk, D/2] = {(k.shape[1], d // 2)}; got {tuple(key_cos.shape)}")
    return _op(q, k, v, key_cos, key_sin, scale)
