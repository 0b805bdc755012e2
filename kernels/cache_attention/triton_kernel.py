"""Triton kernel: flash-style attention of a block's queries over the valid cache slots.

Grid ``(cdiv(Lq, BLOCK_M), B * H)``; each program keeps a ``[BLOCK_M, D]`` query tile and streams
the keys / values in ``BLOCK_N`` tiles with an online softmax (running max and sum, base-2
exponentials). No mask: the cache's valid slots are a prefix, so only the ragged tail of ``Lq`` / ``Lk``
and the padding of ``D`` to a power of two are masked. Strides are explicit, so k / v may be views of
the cache buffer (``cache.k[layer, :, :valid]``) and text K/V may be batch-expanded (stride 0).

Relative RoPE mode (``ROTATE``): each key tile is rotated after its load by the per-slot tables
``[Lk, D/2]``: the tile is split into (even, odd) channel pairs (reshape + split), rotated in fp32 and
joined back, so a single full-width ``tl.dot`` remains and K is read once.

Interpreter: bf16 ``tl.dot`` and bf16 arithmetic are wrong there, so ``UPCAST`` casts tiles to fp32.
"""

import math

import torch
import triton
import triton.language as tl

from streamgen.kernels.runtime import LazyKernel, interpret_enabled, next_pow2


def _attn_kernel(
    q_ptr, k_ptr, v_ptr, cos_ptr, sin_ptr, o_ptr,
    Lq, Lk, H, HEAD_D, HALF_D, qk_scale,
    s_qb, s_ql, s_qh, s_kb, s_kl, s_kh, s_vb, s_vl, s_vh, s_ob, s_ol, s_oh, s_cl,
    ROTATE: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, LOOP_END: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    dm = offs_d < HEAD_D
    q_mask = (offs_m < Lq)[:, None] & dm[None, :]
    q = tl.load(q_ptr + b * s_qb + h * s_qh + offs_m[:, None] * s_ql + offs_d[None, :], mask=q_mask, other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
    k_base = k_ptr + b * s_kb + h * s_kh
    v_base = v_ptr + b * s_vb + h * s_vh
    if ROTATE:
        offs_h = tl.arange(0, BLOCK_D // 2)  # pair index
        hm = offs_h < HALF_D
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    # Interpreter: a constexpr bound, used inline (the interpreter turns every assigned value into a
    # 1-element array, which range() cannot take on numpy >= 2.4, triton#9171). Compiled: Lk at run time.
    for start in range(0, LOOP_END if LOOP_END > 0 else Lk, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        nm = offs_n < Lk
        kv_mask = nm[:, None] & dm[None, :]
        kt = tl.load(k_base + offs_n[:, None] * s_kl + offs_d[None, :], mask=kv_mask, other=0.0)
        if ROTATE:
            cs_mask = nm[:, None] & hm[None, :]
            cs = tl.load(cos_ptr + offs_n[:, None] * s_cl + offs_h[None, :], mask=cs_mask, other=0.0).to(tl.float32)
            sn = tl.load(sin_ptr + offs_n[:, None] * s_cl + offs_h[None, :], mask=cs_mask, other=0.0).to(tl.float32)
            ke, ko = tl.split(tl.reshape(kt.to(tl.float32), [BLOCK_N, BLOCK_D // 2, 2]))  # [N, D] -> 2 x [N, D/2]
            rot = tl.reshape(tl.join(ke * cs - ko * sn, ke * sn + ko * cs), [BLOCK_N, BLOCK_D])  # [N, D/2, 2] -> [N, D]
            kt = rot.to(k_ptr.dtype.element_ty)  # rounded like the reference's rotated keys
        if UPCAST:
            kt = kt.to(tl.float32)
        s = tl.dot(q, tl.trans(kt), input_precision=PRECISION) * qk_scale  # [BLOCK_M, BLOCK_N], log2 units
        s = tl.where(nm[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        vt = tl.load(v_base + offs_n[:, None] * s_vl + offs_d[None, :], mask=kv_mask, other=0.0)
        if UPCAST:
            vt = vt.to(tl.float32)
        else:
            p = p.to(v_ptr.dtype.element_ty)
        acc = acc * alpha[:, None] + tl.dot(p, vt, input_precision=PRECISION)
        m_i = m_new
    out = acc / l_i[:, None]
    o_mask = (offs_m < Lq)[:, None] & dm[None, :]
    tl.store(o_ptr + b * s_ob + h * s_oh + offs_m[:, None] * s_ol + offs_d[None, :], out.to(o_ptr.dtype.element_ty), mask=o_mask)


def _autotune(kernel):
    # GPU only (the interpreter cannot benchmark). Tuned once per head dim / mode / dtype: Lq and Lk
    # change during the cache warm-up, and re-tuning there would stall the stream.
    configs = [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
        for bm, bn, w, s in ((128, 64, 8, 3), (128, 128, 8, 3), (128, 64, 4, 3), (64, 64, 4, 3), (128, 32, 4, 4))
    ]
    return triton.autotune(configs=configs, key=["HEAD_D", "ROTATE", "UPCAST"])(kernel)


_kernel = LazyKernel(_attn_kernel, autotune=_autotune)

# Interpreter tiles: small enough that CPU test shapes cover several tiles and ragged tails; the
# interpreter pays per operation, not per element, so fewer, larger key tiles are faster.
INTERPRET_BLOCK_M = 16
INTERPRET_BLOCK_N = 32


def cache_attention_triton(q, k, v, key_cos=None, key_sin=None, scale=None) -> torch.Tensor:
    b, lq, h, d = q.shape
    lk = k.shape[1]
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.stride(3) != 1:
            raise ValueError(f"{name} must have a contiguous head dim; got strides {tuple(t.stride())}")
    out = torch.empty((b, lq, h, d), dtype=q.dtype, device=q.device)  # [B, Lq, H, D]
    rotate = key_cos is not None
    if rotate:
        key_cos, key_sin = key_cos.float().contiguous(), key_sin.float().contiguous()
    else:
        key_cos = key_sin = out  # unused pointer
    interp = interpret_enabled()
    upcast = interp or q.dtype == torch.float32
    precision = "ieee" if q.dtype == torch.float32 or upcast else "tf32"
    qk_scale = (d**-0.5 if scale is None else float(scale)) * math.log2(math.e)
    args = (
        q, k, v, key_cos, key_sin, out,
        lq, lk, h, d, d // 2, qk_scale,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2), key_cos.stride(0),
    )
    meta = dict(ROTATE=rotate, UPCAST=upcast, PRECISION=precision, BLOCK_D=next_pow2(d), LOOP_END=lk if interp else 0)
    if _kernel.autotuned:
        grid = lambda m: (triton.cdiv(lq, m["BLOCK_M"]), b * h)  # noqa: E731
        _kernel[grid](*args, **meta)
    else:
        bm, bn = INTERPRET_BLOCK_M, INTERPRET_BLOCK_N
        _kernel[(triton.cdiv(lq, bm), b * h)](*args, **meta, BLOCK_M=bm, BLOCK_N=bn, num_warps=1)
    return out
