"""Micro-benchmarks of the streamgen Triton kernels against eager torch on CUDA; prints one JSON object.

Shapes are those of one wan2.1-1.3b block at 832x480 (3 latent frames x 1560 tokens, dim 1536,
12 heads of 128, a full window of 12 frames = 18720 cached tokens), bf16. Each entry reports the
Triton time, the eager reference time, ``speedup`` (eager / Triton; the target is >= 2 for the fused
elementwise kernels) and the max abs error. Attention is also timed against SDPA (whatever backend
torch picks: cuDNN / flash / efficient) and flash-attn when installed: ``vs_fastest`` = fastest
other / Triton (the target is >= 0.9).

Usage: ``TRITON_INTERPRET=0 python benchmarks/kernel_bench.py [--quick]``.
"""
import argparse
import json
import sys

import torch
import torch.nn.functional as F


def _bench(fn) -> float:
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=10, rep=50))  # median ms


def _entry(name, shape, fused, eager, out_fused, out_eager, **extra) -> dict:
    t_f, t_e = _bench(fused), _bench(eager)
    err = (out_fused().float() - out_eager().float()).abs().max().item()
    return {"op": name, "shape": shape, "triton_ms": round(t_f, 4), "eager_ms": round(t_e, 4),
            "speedup": round(t_e / t_f, 2), "max_abs_err": err, **extra}


def bench_qk_norm_rope(b, length, h, d, slots, dtype) -> dict:
    from streamgen.kernels.qk_norm_rope import qk_norm_rope_cache_write, qk_norm_rope_cache_write_reference

    q, k, v = (torch.randn(b, length, h, d, device="cuda", dtype=dtype) for _ in range(3))
    qw, kw = (torch.rand(h * d, device="cuda", dtype=dtype) + 0.5 for _ in range(2))
    ang = torch.rand(length, d // 2, device="cuda") * 6
    cos, sin = ang.cos(), ang.sin()
    kc = torch.zeros(1, b, slots, h, d, device="cuda", dtype=dtype)
    vc = torch.zeros_like(kc)
    kc2, vc2 = kc.clone(), vc.clone()
    args = (q, k, v, qw, kw, cos, sin)
    fused = lambda: qk_norm_rope_cache_write(*args, kc, vc, layer=0, slot_start=slots - length, rotate_k=True, eps=1e-6)  # noqa: E731
    eager = lambda: qk_norm_rope_cache_write_reference(*args, kc2, vc2, 0, slots - length, True, 1e-6)  # noqa: E731
    return _entry("qk_norm_rope_cache_write", [b, length, h, d], fused, eager, fused, eager)


def bench_adaln(b, f, t, c, dtype) -> list[dict]:
    from streamgen.kernels.adaln import gated_residual, gated_residual_reference, layer_norm_modulate, layer_norm_modulate_reference

    x = torch.randn(b, f, t, c, device="cuda", dtype=dtype)
    y = torch.randn_like(x)
    shift, scale, gate = (torch.randn(b, f, c, device="cuda") * 0.3 for _ in range(3))
    lnm = lambda: layer_norm_modulate(x, shift, scale, 1e-6)  # noqa: E731
    lnm_ref = lambda: layer_norm_modulate_reference(x, shift, scale, 1e-6)  # noqa: E731
    gr = lambda: gated_residual(x, y, gate)  # noqa: E731
    gr_ref = lambda: gated_residual_reference(x, y, gate)  # noqa: E731
    return [_entry("layer_norm_modulate", [b, f, t, c], lnm, lnm_ref, lnm, lnm_ref),
            _entry("gated_residual", [b, f, t, c], gr, gr_ref, gr, gr_ref)]


def _sdpa(q, k, v):
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


def bench_attention(b, lq, lk, h, d, dtype, relative: bool) -> dict:
    from streamgen.kernels.cache_attention import cache_attention, cache_attention_reference
    from streamgen.models.rope import apply_rope

    q = torch.randn(b, lq, h, d, device="cuda", dtype=dtype)
    kc = torch.randn(b, lk, h, d, device="cuda", dtype=dtype)
    vc = torch.randn(b, lk, h, d, device="cuda", dtype=dtype)
    rel = {}
    if relative:
        ang = torch.rand(lk, d // 2, device="cuda") * 6
        rel = dict(key_cos=ang.cos(), key_sin=ang.sin())
    fused = lambda: cache_attention(q, kc, vc, **rel)  # noqa: E731
    eager = lambda: cache_attention_reference(q, kc, vc, **rel)  # noqa: E731
    if relative:  # the fastest alternative rotates keys in a separate pass, then runs SDPA
        sdpa = lambda: _sdpa(q, apply_rope(kc, rel["key_cos"], rel["key_sin"]), vc)  # noqa: E731
    else:
        sdpa = lambda: _sdpa(q, kc, vc)  # noqa: E731
    entry = _entry("cache_attention_relative" if relative else "cache_attention", [b, lq, lk, h, d], fused, eager, fused, eager)
    t_f = entry["triton_ms"]
    others = {"sdpa_ms": _bench(sdpa)}
    try:
        from flash_attn import flash_attn_func

        if relative:
            others["flash_attn_ms"] = _bench(lambda: flash_attn_func(q, apply_rope(kc, rel["key_cos"], rel["key_sin"]), vc))
        else:
            others["flash_attn_ms"] = _bench(lambda: flash_attn_func(q, kc, vc))
    except ImportError:
        pass
    entry.update({k_: round(v_, 4) for k_, v_ in others.items()})
    entry["vs_fastest"] = round(min(others.values()) / t_f, 3)
    flops = 4 * b * h * lq * lk * d
    entry["triton_tflops"] = round(flops / (t_f * 1e-3) / 1e12, 1)
    return entry


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller attention (1 frame of queries, 6 of keys)")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print(json.dumps({"error": "no CUDA device; kernel_bench needs a GPU"}))
        return 1
    from streamgen.kernels.runtime import interpret_enabled

    if interpret_enabled():
        print(json.dumps({"error": "TRITON_INTERPRET=1 is set; benchmarks need compiled kernels"}))
        return 1
    dtype = torch.bfloat16
    tpf, frames, window, dim, heads = 1560, 3, 12, 1536, 12
    lq, lk = (tpf, 6 * tpf) if args.quick else (frames * tpf, window * tpf)
    results = [bench_qk_norm_rope(1, frames * tpf, heads, dim // heads, window * tpf, dtype)]
    results += bench_adaln(1, frames, tpf, dim, dtype)
    for relative in (False, True):
        torch.cuda.empty_cache()
        results.append(bench_attention(1, lq, lk, heads, dim // heads, dtype, relative))
    summary = {
        "device": torch.cuda.get_device_name(),
        "dtype": str(dtype).replace("torch.", ""),
        "kernels": results,
        "fused_elementwise_min_speedup": min(r["speedup"] for r in results if not r["op"].startswith("cache_attention")),
        "attention_vs_fastest": {r["op"]: r["vs_fastest"] for r in results if r["op"].startswith("cache_attention")},
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
