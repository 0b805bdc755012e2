"""Attention backends, resolved once when the model is built.

A backend is chosen by name (``CausalDiT(config, attention_backend=...)``, ``load_pipeline(...,
attention_backend=...)``, ``streamgen ... --attention``) and resolved once by :func:`resolve_backend`
into an :class:`AttentionBackend`; the model hands that object to every layer, so a block calls
functions and never sees the name.

Backends:
- ``reference``: plain matmul + softmax in fp32 (the ground truth of the tests);
- ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` (CPU default, GPU fallback);
- ``triton``: the Triton kernels of ``streamgen.kernels`` (imported on resolution): fused qk-norm /
  RoPE / cache write and cache attention for streaming self-attention, fused adaLN ops everywhere;
  masked calls go through sdpa;
- ``flash``: flash-attn when installed (unmasked calls only).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from streamgen.models.norms import gated_residual, layer_norm_modulate

BACKENDS = ("reference", "sdpa", "triton", "flash")


def available_backends() -> list[str]:
    names = ["reference", "sdpa"]
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


_ATTEND = {"reference": attention_reference, "sdpa": _sdpa, "triton": _triton, "flash": _flash}


@dataclass(frozen=True, kw_only=True)
class AttentionBackend:
    """What a named backend does, resolved once: the attention call and the block's adaLN ops."""

    name: str
    attend: Callable[..., torch.Tensor]  # (q, k, v, mask) -> out, all ``[B, L, H, D]``
    layer_norm_modulate: Callable[..., torch.Tensor]  # norms.layer_norm_modulate or its fused kernel
    gated_residual: Callable[..., torch.Tensor]  # norms.gated_residual or its fused kernel
    fused_cache: bool  # streaming self-attention runs the Triton cache kernels (norm, RoPE, write, attend)

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Scaled dot-product attention ``[B, Lq, H, D]``; ``mask`` ``[Lq, Lk]`` bool or None."""
        return self.attend(q, k, v, mask)


def resolve_backend(name: str) -> AttentionBackend:
    """The backend called ``name`` (one of ``BACKENDS``)."""
    if name not in _ATTEND:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {BACKENDS}")
    norm, residual = layer_norm_modulate, gated_residual
    if name == "triton":
        from streamgen.kernels.adaln import gated_residual as residual
        from streamgen.kernels.adaln import layer_norm_modulate as norm
    return AttentionBackend(name=name, attend=_ATTEND[name], layer_norm_modulate=norm, gated_residual=residual,
                            fused_cache=name == "triton")


DEFAULT_BACKEND = resolve_backend("sdpa")  # what a layer holds until its model sets the backend
