"""The decode benchmark of the GPU check, dry-run on the CPU at a tiny size (the script itself, not speed)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_decode_bench_dry_run_on_cpu():
    cmd = [sys.executable, str(ROOT / "benchmarks" / "decode_bench.py"), "--device", "cpu", "--dtype", "fp32",
           "--height", "8", "--width", "16", "--base-dim", "4", "--blocks", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["resolution"] == "16x8" and out["vae"]["base_dim"] == 4
    for name in ("vae", "tiny"):
        entry = out[name]
        assert entry["frames_per_block"] == 12 and entry["frame_size"] == [8, 16] and entry["blocks_timed"] == 1
        assert entry["block_ms_p50"] > 0 and entry["decode_frames_per_second"] > 0


def test_decode_bench_rejects_bad_sizes_and_gpu_check_parses():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "decode_bench.py"), "--height", "10"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--height 10" in proc.stderr and proc.stderr.count("\n") == 1
    assert subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_check.sh")]).returncode == 0
