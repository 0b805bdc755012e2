"""Reference (plain torch) elementwise ops of the block. The Triton kernels match these."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """Wan RMSNorm over the last dim, computed in fp32."""
    xf = x.float()
    out = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
    return out * weight if weight is not None else out


def layer_norm_modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    """``LayerNorm(x) * (1 + scale) + shift`` with per-frame modulation.

    x: ``[B, F, T, C]``; shift, scale: ``[B, F, C]``. LayerNorm without affine, in fp32.
    """
    normed = F.layer_norm(x.float(), (x.shape[-1],), eps=eps)
    return (normed * (1 + scale.float()[:, :, None]) + shift.float()[:, :, None]).to(x.dtype)


def gated_residual(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """``x + y * gate`` with per-frame gate. x, y: ``[B, F, T, C]``; gate: ``[B, F, C]``."""
    return (x.float() + y.float() * gate.float()[:, :, None]).to(x.dtype)
