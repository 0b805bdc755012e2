"""Feature caching, measured: per-block time and PSNR against the no-cache output, interleaved in one run.

    python benchmarks/feature_cache_bench.py --model world --threads 2 --blocks 24 --warmup 3 \
        --settings none,reuse@1,learned@1,reuse@2,learned@2,int8,int8+learned@1 \
        --predictor 2=path/to/feature_predictor_k2.safetensors

A setting is ``none`` or ``+``-joined parts: ``reuse@K`` / ``learned@K`` (``streamgen.feature_cache``,
every other denoising step reuses from layer K on), ``int8`` (dynamic int8 linears), ``bf16`` (bf16
linears), ``compile`` (``torch.compile`` of the block step; the warm-up blocks pay for it).
``learned@K`` reads ``--predictor K=PATH`` when given, else the shipped model's predictor. Every setting
streams the same model (same weights, seed, noise and start) in its own session; the sessions step one
block each in turn, so load changes on a shared machine hit all settings alike. Prints
JSON and a markdown table: per setting the median wall and process-CPU ms per block (warm-up excluded;
the CPU time is what a loaded shared machine disturbs least), their ratios to ``none``, the share of
forwards that reused, and the PSNR of its decoded frames against ``none``'s over all blocks (warm-up
included).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from cpu_fastpath import psnr  # noqa: E402  (the one PSNR of the benchmarks, uint8 frames)

from streamgen.feature_cache_spec import FeatureCacheSpec, parse_feature_cache  # noqa: E402
from streamgen.pipeline import load_pipeline  # noqa: E402


def setting_keywords(name: str, predictors: dict[int, str]) -> dict:
    """``load_pipeline`` speed keywords of a setting name (see the module docstring)."""
    kw: dict = {}
    if name == "none":
        return kw
    for part in name.split("+"):
        if part == "int8":
            kw["quantize"] = "int8"
        elif part == "bf16":
            kw["matmul_dtype"] = "bfloat16"
        elif part == "compile":
            kw["compile"] = True
        else:
            spec = parse_feature_cache(part)
            if spec.mode == "learned" and spec.layer in predictors:
                spec = FeatureCacheSpec(mode="learned", layer=spec.layer, predictor=predictors[spec.layer])
            kw["feature_cache"] = spec
    return kw


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="world")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--blocks", type=int, default=24, help="measured blocks per setting")
    p.add_argument("--warmup", type=int, default=3, help="blocks per setting before timing")
    p.add_argument("--settings", default="none,reuse@1,learned@1", help="comma list, the first is the reference")
    p.add_argument("--predictor", action="append", default=[], metavar="K=PATH", help="predictor file of learned@K")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    names = args.settings.split(",")
    if names[0] != "none":
        p.error(f"--settings must start with none (the reference); got {args.settings!r}")
    predictors = {}
    for item in args.predictor:
        k, _, path = item.partition("=")
        if not k.isdigit() or not path:
            p.error(f"--predictor {item!r}: give K=PATH, e.g. 2=feature_predictor_k2.safetensors")
        predictors[int(k)] = path
    torch.set_num_threads(args.threads)
    pipes = {n: load_pipeline(args.model, device="cpu", **setting_keywords(n, predictors)) for n in names}
    sessions = {n: pipes[n].start(seed=args.seed) for n in names}
    times: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}  # process CPU seconds: what a loaded machine disturbs least
    frames: dict[str, list[np.ndarray]] = {n: [] for n in names}
    load_before = os.getloadavg()[0]
    with torch.inference_mode():
        for i in range(args.warmup + args.blocks):
            for n in names:  # interleaved: one block of each setting in turn
                t0, c0 = time.perf_counter(), time.process_time()
                chunk = sessions[n].step()
                dt, dc = time.perf_counter() - t0, time.process_time() - c0
                if i >= args.warmup:
                    times[n].append(dt)
                    cpu[n].append(dc)
                frames[n].append(np.asarray(chunk.video))
    ref_ms = 1000 * statistics.median(times["none"])
    ref_cpu = 1000 * statistics.median(cpu["none"])
    ref_frames = np.concatenate(frames["none"])
    rows = {}
    for n in names:
        ms, cpu_ms = 1000 * statistics.median(times[n]), 1000 * statistics.median(cpu[n])
        cache = pipes[n].feature_cache
        db = psnr(ref_frames, np.concatenate(frames[n]))
        rows[n] = {"block_ms_median": round(ms, 2), "speedup_vs_none": round(ref_ms / ms, 3),
                   "block_cpu_ms_median": round(cpu_ms, 2), "cpu_speedup_vs_none": round(ref_cpu / cpu_ms, 3),
                   "reused_forwards": round(cache.reused / (cache.reused + cache.full), 3) if cache else 0.0,
                   "psnr_db_vs_none": None if math.isinf(db) else round(db, 2),
                   "acceleration": pipes[n].acceleration.describe() if pipes[n].acceleration else None}
    result = {"model": args.model, "threads": args.threads, "blocks": args.blocks, "warmup": args.warmup,
              "frames_compared": int(len(ref_frames)), "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
              "settings": rows}
    print(json.dumps(result, indent=1))
    print("\n| setting | wall ms / block | vs none | CPU ms / block | vs none | forwards reused | PSNR vs none |")
    print("|---|---|---|---|---|---|---|")
    for n, r in rows.items():
        db = "identical" if r["psnr_db_vs_none"] is None else f"{r['psnr_db_vs_none']:.2f} dB"
        print(f"| {n} | {r['block_ms_median']:.1f} | {r['speedup_vs_none']:.3f}x | {r['block_cpu_ms_median']:.1f} | "
              f"{r['cpu_speedup_vs_none']:.3f}x | {100 * r['reused_forwards']:.0f} % | {db} |")
    return result


if __name__ == "__main__":
    main()
