"""Plain-torch reference of the adaLN ops (also the CPU path) and their backward formulas.

The forward ops are the model's own (``streamgen.models.norms``): LayerNorm without affine in fp32,
per-frame modulation ``* (1 + scale) + shift``; gated residual ``x + y * gate`` in fp32; results in
x's dtype. x, y: ``[B, F, T, C]``; shift, scale, gate: ``[B, F, C]``.
"""
from __future__ import annotations

import torch

from streamgen.models.norms import gated_residual as gated_residual_reference
from streamgen.models.norms import layer_norm_modulate as layer_norm_modulate_reference

__all__ = ["gated_residual_backward", "gated_residual_reference", "layer_norm_modulate_backward",
           "layer_norm_modulate_reference"]


def layer_norm_modulate_backward(
    grad: torch.Tensor, x: torch.Tensor, scale: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (dx, dshift, dscale) of :func:`layer_norm_modulate_reference`, in fp32 math.

    With ``xhat = (x - mean) * rstd`` and ``g = grad * (1 + scale)``:
    ``dx = rstd * (g - mean(g) - xhat * mean(g * xhat))``, ``dshift = sum_T grad``,
    ``dscale = sum_T grad * xhat``.
    """
    xf = x.float()
    mean = xf.mean(-1, keepdim=True)  # [B, F, T, 1]
    rstd = torch.rsqrt(xf.var(-1, unbiased=False, keepdim=True) + eps)  # [B, F, T, 1]
    xhat = (xf - mean) * rstd  # [B, F, T, C]
    gf = grad.float()
    g = gf * (1 + scale.float()[:, :, None])  # [B, F, T, C]
    dx = rstd * (g - g.mean(-1, keepdim=True) - xhat * (g * xhat).mean(-1, keepdim=True))
    return dx, gf.sum(2), (gf * xhat).sum(2)


def gated_residual_backward(
    grad: torch.Tensor, y: torch.Tensor, gate: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (dx, dy, dgate) of :func:`gated_residual_reference`, in fp32 math."""
    gf = grad.float()
    return gf, gf * gate.float()[:, :, None], (gf * y.float()).sum(2)
