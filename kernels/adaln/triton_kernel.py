"""Triton kernels: LayerNorm + adaLN modulate, and the gated residual add (forward).

One program per token row ``(b, f, t)`` of ``C`` channels; the row's frame ``(b, f)`` selects the
modulation vectors. Statistics in fp32, one read of x and one write of the result (the eager
reference makes ~6 passes over the row: cast, mean, var, normalise, scale, shift).
"""

import torch
import triton.language as tl

from streamgen.kernels.runtime import LazyKernel, interpret_enabled, next_pow2


def _ln_modulate_kernel(
    x_ptr, shift_ptr, scale_ptr, out_ptr,
    F, T, C, eps,
    s_xr, s_shb, s_shf, s_scb, s_scf, s_or,
    BLOCK_C: tl.constexpr,
):
    row = tl.program_id(0)
    b = row // (F * T)
    f = (row // T) % F
    c = tl.arange(0, BLOCK_C)
    cm = c < C
    x = tl.load(x_ptr + row * s_xr + c, mask=cm, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=0) / C
    xc = tl.where(cm, x - mean, 0.0)
    rstd = tl.rsqrt(tl.sum(xc * xc, axis=0) / C + eps)
    sh = tl.load(shift_ptr + b * s_shb + f * s_shf + c, mask=cm, other=0.0).to(tl.float32)
    sc = tl.load(scale_ptr + b * s_scb + f * s_scf + c, mask=cm, other=0.0).to(tl.float32)
    out = xc * rstd * (1.0 + sc) + sh
    tl.store(out_ptr + row * s_or + c, out.to(out_ptr.dtype.element_ty), mask=cm)


def _gated_residual_kernel(
    x_ptr, y_ptr, gate_ptr, out_ptr,
    F, T, C,
    s_xr, s_yr, s_gb, s_gf, s_or,
    BLOCK_C: tl.constexpr,
):
    row = tl.program_id(0)
    b = row // (F * T)
    f = (row // T) % F
    c = tl.arange(0, BLOCK_C)
    cm = c < C
    x = tl.load(x_ptr + row * s_xr + c, mask=cm, other=0.0).to(tl.float32)
    y = tl.load(y_ptr + row * s_yr + c, mask=cm, other=0.0).to(tl.float32)
    g = tl.load(gate_ptr + b * s_gb + f * s_gf + c, mask=cm, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * s_or + c, (x + y * g).to(out_ptr.dtype.element_ty), mask=cm)


_ln_kernel = LazyKernel(_ln_modulate_kernel)
_gr_kernel = LazyKernel(_gated_residual_kernel)


def _rows(x: torch.Tensor) -> torch.Tensor:
    """x ``[B, F, T, C]`` as ``[B*F*T, C]`` rows (a view when x is contiguous)."""
    return x.reshape(-1, x.shape[-1])  # [B*F*T, C]


def _warps(block: int) -> int:
    return 1 if interpret_enabled() else (4 if block <= 1024 else 8)


def layer_norm_modulate_triton(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    b, f, t, c = x.shape
    xr = _rows(x)
    if xr.stride(1) != 1:
        xr = xr.contiguous()
    out = torch.empty((b * f * t, c), dtype=x.dtype, device=x.device)  # [B*F*T, C]
    if shift.stride(-1) != 1:
        shift = shift.contiguous()
    if scale.stride(-1) != 1:
        scale = scale.contiguous()
    block = next_pow2(c)
    _ln_kernel[(b * f * t,)](
        xr, shift, scale, out, f, t, c, float(eps),
        xr.stride(0), shift.stride(0), shift.stride(1), scale.stride(0), scale.stride(1), out.stride(0),
        BLOCK_C=block, num_warps=_warps(block),
    )
    return out.view(b, f, t, c)  # [B, F, T, C]


def gated_residual_triton(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    b, f, t, c = x.shape
    xr, yr = _rows(x), _rows(y)
    if xr.stride(1) != 1:
        xr = xr.contiguous()
    if yr.stride(1) != 1:
        yr = yr.contiguous()
    if gate.stride(-1) != 1:
        gate = gate.contiguous()
    out = torch.empty((b * f * t, c), dtype=x.dtype, device=x.device)  # [B*F*T, C]
    block = next_pow2(c)
    _gr_kernel[(b * f * t,)](
        xr, yr, gate, out, f, t, c,
        xr.stride(0), yr.stride(0), gate.stride(0), gate.stride(1), out.stride(0),
        BLOCK_C=block, num_warps=_warps(block),
    )
    return out.view(b, f, t, c)  # [B, F, T, C]
