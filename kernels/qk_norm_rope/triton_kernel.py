"""Triton kernel: qk RMSNorm (full model dim) + RoPE on adjacent pairs + K / V write into cache slots.

One program per token row ``(b, l)`` handles all ``C = H * D`` channels of q, k and v: the RMS
statistic needs the whole row. The row is loaded contiguously and split into ``C / 2`` (even, odd)
pairs (reshape + split), which is exactly what RoPE rotates, then joined back for a contiguous store.
Math is fp32; intermediate roundings follow the reference (norm -> input dtype, times weight ->
output dtype), so the result is the reference's up to the last rounding.
"""

import torch
import triton
import triton.language as tl

from streamgen.kernels.runtime import LazyKernel, interpret_enabled, next_pow2


def _qk_norm_rope_kernel(
    q_ptr, k_ptr, v_ptr, qw_ptr, kw_ptr, cos_ptr, sin_ptr, qo_ptr, kc_ptr, vc_ptr,
    L, NUM_PAIRS, HALF_D, eps,
    s_qb, s_ql, s_kb, s_kl, s_vb, s_vl, s_ob, s_ol, s_kcb, s_kcl, s_vcb, s_vcl, s_cl,
    NORM_Q: tl.constexpr, NORM_K: tl.constexpr, ROTATE_K: tl.constexpr, BLOCK_P: tl.constexpr,
):
    row = tl.program_id(0)
    b = row // L
    l = row % L
    n_ch = 2 * NUM_PAIRS
    ch = tl.arange(0, 2 * BLOCK_P)  # channels, loaded contiguously, then split into (even, odd) pairs
    cm = ch < n_ch
    p = tl.arange(0, BLOCK_P)
    pm = p < NUM_PAIRS
    j = p % HALF_D  # the pair's index inside its head
    c = tl.load(cos_ptr + l * s_cl + j, mask=pm, other=0.0).to(tl.float32)
    s = tl.load(sin_ptr + l * s_cl + j, mask=pm, other=0.0).to(tl.float32)
    OUT = qo_ptr.dtype.element_ty

    # ---- q: norm, weight, rotate --------------------------------------------------------------
    x = tl.load(q_ptr + b * s_qb + l * s_ql + ch, mask=cm, other=0.0).to(tl.float32)
    if NORM_Q:
        r = tl.rsqrt(tl.sum(x * x, axis=0) / n_ch + eps)
        x = (x * r).to(q_ptr.dtype.element_ty).to(tl.float32)
        x = (x * tl.load(qw_ptr + ch, mask=cm, other=0.0).to(tl.float32)).to(OUT).to(tl.float32)
    xe, xo = tl.split(tl.reshape(x, [BLOCK_P, 2]))  # [2P] -> [P, 2] -> 2 x [P]
    y = tl.reshape(tl.join(xe * c - xo * s, xe * s + xo * c), [2 * BLOCK_P])  # [P, 2] -> [2P]
    tl.store(qo_ptr + b * s_ob + l * s_ol + ch, y.to(OUT), mask=cm)

    # ---- k: norm, weight, rotate if absolute mode, write into its cache slot ------------------
    x = tl.load(k_ptr + b * s_kb + l * s_kl + ch, mask=cm, other=0.0).to(tl.float32)
    if NORM_K:
        r = tl.rsqrt(tl.sum(x * x, axis=0) / n_ch + eps)
        x = (x * r).to(k_ptr.dtype.element_ty).to(tl.float32)
        # rounded to q_out's dtype: the launcher requires k's output dtype to equal q's
        x = (x * tl.load(kw_ptr + ch, mask=cm, other=0.0).to(tl.float32)).to(OUT).to(tl.float32)
    if ROTATE_K:
        xe, xo = tl.split(tl.reshape(x, [BLOCK_P, 2]))  # [2P] -> [P, 2] -> 2 x [P]
        x = tl.reshape(tl.join(xe * c - xo * s, xe * s + xo * c), [2 * BLOCK_P]).to(OUT).to(tl.float32)  # [2P]
    tl.store(kc_ptr + b * s_kcb + l * s_kcl + ch, x.to(kc_ptr.dtype.element_ty), mask=cm)

    # ---- v: copy into its cache slot ----------------------------------------------------------
    x = tl.load(v_ptr + b * s_vb + l * s_vl + ch, mask=cm, other=0.0)
    tl.store(vc_ptr + b * s_vcb + l * s_vcl + ch, x.to(vc_ptr.dtype.element_ty), mask=cm)


_kernel = LazyKernel(_qk_norm_rope_kernel)


def _token_major(x: torch.Tensor) -> torch.Tensor:
    """x ``[B, L, H, D]`` with each token's ``H * D`` channels contiguous (copy only if they are not)."""
    h, d = x.shape[2], x.shape[3]
    if x.stride(3) == 1 and x.stride(2) == d:
        return x
    return x.contiguous()


def qk_norm_rope_cache_write_triton(
    q, k, v, q_weight, k_weight, cos, sin, k_cache, v_cache, layer: int, slot_start: int, rotate_k: bool, eps: float
) -> torch.Tensor:
    """Launch the fused kernel (same contract as the reference); returns q_out ``[B, L, H, D]``."""
    b, length, h, d = q.shape
    out_dtype = q.dtype if q_weight is None else torch.promote_types(q.dtype, q_weight.dtype)
    k_out_dtype = k.dtype if k_weight is None else torch.promote_types(k.dtype, k_weight.dtype)
    if k_out_dtype != out_dtype:
        raise ValueError(f"normed k dtype {k_out_dtype} differs from normed q dtype {out_dtype}; cast q, k alike")
    q, k, v = _token_major(q), _token_major(k), _token_major(v)
    cos, sin = cos.contiguous(), sin.contiguous()
    q_out = torch.empty((b, length, h, d), dtype=out_dtype, device=q.device)  # [B, L, H, D]
    kc = k_cache[layer, :, slot_start : slot_start + length]  # [B, L, H, D] view of the slots
    vc = v_cache[layer, :, slot_start : slot_start + length]  # [B, L, H, D] view of the slots
    if kc.stride(3) != 1 or kc.stride(2) != d or vc.stride(3) != 1 or vc.stride(2) != d:
        raise ValueError(f"cache buffers must have contiguous (H, D) per slot; got strides {tuple(k_cache.stride())}")
    num_pairs = h * d // 2
    qw = q_weight if q_weight is not None else q_out  # dummy pointer when the norm is off
    kw = k_weight if k_weight is not None else q_out
    block = next_pow2(num_pairs)
    interp = interpret_enabled()
    _kernel[(b * length,)](
        q, k, v, qw.contiguous(), kw.contiguous(), cos, sin, q_out, kc, vc,
        length, num_pairs, d // 2, float(eps),
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        q_out.stride(0), q_out.stride(1), kc.stride(0), kc.stride(1), vc.stride(0), vc.stride(1), cos.stride(0),
        NORM_Q=q_weight is not None, NORM_K=k_weight is not None, ROTATE_K=bool(rotate_k), BLOCK_P=block,
        num_warps=1 if interp else (4 if block <= 512 else 8),
    )
    return q_out
