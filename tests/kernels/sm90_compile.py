"""Compile the streamgen kernels for Hopper (sm_90) ahead of time, without a GPU; print JSON results.

Run in its own process with ``TRITON_INTERPRET=0`` (``python -m tests.kernels.sm90_compile``): a
process that imported triton in interpreter mode cannot compile (Triton's library functions are
decorated in one mode at import). Used by ``test_kernel_compile_sm90.py``.
"""
import json
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.jit import JITFunction

from streamgen.kernels.adaln.triton_kernel import _gated_residual_kernel, _ln_modulate_kernel
from streamgen.kernels.cache_attention.triton_kernel import _attn_kernel
from streamgen.kernels.qk_norm_rope.triton_kernel import _qk_norm_rope_kernel

TARGET = GPUTarget("cuda", 90, 32)


def _ints(*names):
    return {n: "i32" for n in names}


def _compile(label, fn, sig, consts, warps, stages=3) -> dict:
    src = ASTSource(JITFunction(fn), {**sig, **{k: "constexpr" for k in consts}}, consts)
    try:
        kernel = triton.compile(src, target=TARGET, options={"num_warps": warps, "num_stages": stages})
    except Exception as exc:  # reported, not raised: the test names every failing kernel
        return {"kernel": label, "ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000]}
    return {"kernel": label, "ok": True, "shared_bytes": kernel.metadata.shared}


def main() -> int:
    results = []
    for dt in ("bf16", "fp32"):
        sig = {n: f"*{dt}" for n in ("q_ptr", "k_ptr", "v_ptr", "qw_ptr", "kw_ptr", "qo_ptr", "kc_ptr", "vc_ptr")}
        sig.update(cos_ptr="*fp32", sin_ptr="*fp32", eps="fp32", **_ints("L", "NUM_PAIRS", "HALF_D"))
        sig.update(_ints("s_qb", "s_ql", "s_kb", "s_kl", "s_vb", "s_vl", "s_ob", "s_ol", "s_kcb", "s_kcl", "s_vcb", "s_vcl", "s_cl"))
        results.append(_compile(f"qk_norm_rope/{dt}", _qk_norm_rope_kernel, sig,
                                dict(NORM_Q=True, NORM_K=True, ROTATE_K=True, BLOCK_P=1024), warps=8))
    sig = dict(x_ptr="*bf16", shift_ptr="*fp32", scale_ptr="*fp32", out_ptr="*bf16", eps="fp32",
               **_ints("F", "T", "C", "s_xr", "s_shb", "s_shf", "s_scb", "s_scf", "s_or"))
    results.append(_compile("layer_norm_modulate/bf16", _ln_modulate_kernel, sig, dict(BLOCK_C=2048), warps=8))
    sig = dict(x_ptr="*bf16", y_ptr="*bf16", gate_ptr="*fp32", out_ptr="*bf16",
               **_ints("F", "T", "C", "s_xr", "s_yr", "s_gb", "s_gf", "s_or"))
    results.append(_compile("gated_residual/bf16", _gated_residual_kernel, sig, dict(BLOCK_C=2048), warps=8))
    for dt, rotate in (("bf16", False), ("bf16", True), ("fp32", False)):
        sig = dict(q_ptr=f"*{dt}", k_ptr=f"*{dt}", v_ptr=f"*{dt}", cos_ptr="*fp32", sin_ptr="*fp32", o_ptr=f"*{dt}",
                   qk_scale="fp32", **_ints("Lq", "Lk", "H", "HEAD_D", "HALF_D"))
        sig.update(_ints("s_qb", "s_ql", "s_qh", "s_kb", "s_kl", "s_kh", "s_vb", "s_vl", "s_vh", "s_ob", "s_ol", "s_oh", "s_cl"))
        consts = dict(ROTATE=rotate, UPCAST=dt == "fp32", PRECISION="ieee" if dt == "fp32" else "tf32", BLOCK_D=128,
                      BLOCK_M=128, BLOCK_N=64, LOOP_END=0)
        label = f"cache_attention/{dt}/{'relative' if rotate else 'absolute'}/128x64"
        results.append(_compile(label, _attn_kernel, sig, consts, warps=8))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
