"""``streamgen::layer_norm_modulate`` and ``streamgen::gated_residual``: torch ops with autograd.

Forward runs the Triton kernel (or the reference on CPU); backward is the closed-form gradient of
the reference in plain torch (``reference.py``), so training through these ops needs no extra kernel.
"""
from __future__ import annotations

import torch

from streamgen.kernels.runtime import use_triton
from streamgen.kernels.adaln.reference import (
    gated_residual_backward,
    gated_residual_reference,
    layer_norm_modulate_backward,
    layer_norm_modulate_reference,
)


@torch.library.custom_op("streamgen::layer_norm_modulate", mutates_args=())
def _lnm(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    if use_triton(x, shift, scale):
        from streamgen.kernels.adaln.triton_kernel import layer_norm_modulate_triton

        return layer_norm_modulate_triton(x, shift, scale, eps)
    return layer_norm_modulate_reference(x, shift, scale, eps)


@_lnm.register_fake
def _lnm_fake(x, shift, scale, eps):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _lnm_setup(ctx, inputs, output) -> None:
    x, shift, scale, eps = inputs
    ctx.save_for_backward(x, scale)
    ctx.eps = eps
    ctx.shift_dtype = shift.dtype


def _lnm_backward(ctx, grad):
    x, scale = ctx.saved_tensors
    dx, dshift, dscale = layer_norm_modulate_backward(grad, x, scale, ctx.eps)
    return dx.to(x.dtype), dshift.to(ctx.shift_dtype), dscale.to(scale.dtype), None


_lnm.register_autograd(_lnm_backward, setup_context=_lnm_setup)


@torch.library.custom_op("streamgen::gated_residual", mutates_args=())
def _gres(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    if use_triton(x, y, gate):
        from streamgen.kernels.adaln.triton_kernel import gated_residual_triton

        return gated_residual_triton(x, y, gate)
    return gated_residual_reference(x, y, gate)


@_gres.register_fake
def _gres_fake(x, y, gate):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _gres_setup(ctx, inputs, output) -> None:
    x, y, gate = inputs
    ctx.save_for_backward(y, gate)
    ctx.x_dtype = x.dtype


def _gres_backward(ctx, grad):
    y, gate = ctx.saved_tensors
    dx, dy, dgate = gated_residual_backward(grad, y, gate)
    return dx.to(ctx.x_dtype), dy.to(y.dtype), dgate.to(gate.dtype)


_gres.register_autograd(_gres_backward, setup_context=_gres_setup)


def _check_frames(x: torch.Tensor, name: str, vec: torch.Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"x must be [B, F, T, C]; got shape {tuple(x.shape)}")
    b, f, _, c = x.shape
    if tuple(vec.shape) != (b, f, c):
        raise ValueError(f"{name} must be [B, F, C] = {(b, f, c)}; got {tuple(vec.shape)}")


def layer_norm_modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    """``LayerNorm(x) * (1 + scale) + shift``; x ``[B, F, T, C]``, shift / scale ``[B, F, C]``; x's dtype out."""
    _check_frames(x, "shift", shift)
    _check_frames(x, "scale", scale)
    return _lnm(x, shift, scale, eps)


def gated_residual(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """``x + y * gate``; x, y ``[B, F, T, C]``, gate ``[B, F, C]``; x's dtype out."""
    if y.shape != x.shape:
        raise ValueError(f"y shape {tuple(y.shape)} differs from x shape {tuple(x.shape)}")
    _check_frames(x, "gate", gate)
    return _gres(x, y, gate)
