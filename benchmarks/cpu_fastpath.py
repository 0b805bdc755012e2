"""The CPU fast path, measured: per-block time of each speed setting against fp32 eager, interleaved.

    python benchmarks/cpu_fastpath.py --model mid --threads 2 --blocks 12 --warmup 3

Every setting streams the same model (same weights, seed and noise) in its own session; the sessions
step one block each in turn, so load changes on a shared machine hit all settings alike. Prints JSON:
per setting the median wall ms per block (warm-up excluded), the ratio to fp32 eager, and the PSNR of
its decoded frames against fp32 eager's over all blocks (null: identical); ``fastest_above_40db`` names the winner.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time

import numpy as np
import torch

from streamgen.pipeline import load_pipeline

# name -> load_pipeline speed keywords; the first is the reference.
SETTINGS = {
    "fp32_eager": {},
    "bf16_eager": {"matmul_dtype": "bfloat16"},
    "int8_eager": {"quantize": "int8"},
    "fp32_compiled": {"compile": True},
    "int8_compiled": {"quantize": "int8", "compile": True},
}


def psnr(ref: np.ndarray, out: np.ndarray) -> float:
    mse = float(np.mean((ref.astype(np.float64) - out.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _finite(db: float) -> float | None:
    """PSNR for JSON: None when the frames are identical (infinite PSNR is not JSON)."""
    return None if math.isinf(db) else round(db, 2)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mid")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--blocks", type=int, default=12, help="measured blocks per setting")
    p.add_argument("--warmup", type=int, default=3, help="blocks per setting before timing (compilation)")
    p.add_argument("--settings", default=",".join(SETTINGS), help=f"comma list of {list(SETTINGS)}")
    args = p.parse_args(argv)
    names = args.settings.split(",")
    unknown = [n for n in names if n not in SETTINGS]
    if unknown or names[0] != "fp32_eager":
        p.error(f"--settings must start with fp32_eager and name only {list(SETTINGS)}; got {args.settings!r}")
    torch.set_num_threads(args.threads)
    sessions = {n: load_pipeline(args.model, device="cpu", **SETTINGS[n]).start(seed=0) for n in names}
    times: dict[str, list[float]] = {n: [] for n in names}
    frames: dict[str, list[np.ndarray]] = {n: [] for n in names}
    load_before = os.getloadavg()[0]
    with torch.inference_mode():
        for i in range(args.warmup + args.blocks):
            for n in names:  # interleaved: one block of each setting in turn
                t0 = time.perf_counter()
                chunk = sessions[n].step()
                dt = time.perf_counter() - t0
                if i >= args.warmup:
                    times[n].append(dt)
                frames[n].append(np.asarray(chunk.video))
    ref_ms = 1000 * statistics.median(times["fp32_eager"])
    ref_frames = np.concatenate(frames["fp32_eager"])
    rows = {}
    for n in names:
        ms = 1000 * statistics.median(times[n])
        rows[n] = {"block_ms_median": round(ms, 1), "speedup_vs_fp32_eager": round(ref_ms / ms, 3),
                   "psnr_db_vs_fp32_eager": _finite(psnr(ref_frames, np.concatenate(frames[n])))}
    good = [n for n in names[1:] if (rows[n]["psnr_db_vs_fp32_eager"] or math.inf) > 40.0]
    result = {"model": args.model, "threads": args.threads, "blocks": args.blocks, "warmup": args.warmup,
              "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)], "settings": rows,
              "fastest_above_40db": min(good, key=lambda n: rows[n]["block_ms_median"]) if good else None}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
