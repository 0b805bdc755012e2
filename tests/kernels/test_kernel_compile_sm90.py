"""The kernels compile for Hopper (sm_90) on a machine without a GPU: Triton's frontend, LLVM and the
bundled ptxas run ahead of time, so errors in compiled-only paths (bf16 dots, the run-time loop bound,
static branches, split / join layouts) show up here instead of on the GPU. Also checks the shared
memory of the attention tiles stays within an H100's 227 KiB."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[2]
H100_SHARED = 227 * 1024


def test_kernels_compile_for_sm90(tmp_path):
    ptxas = Path(__import__("triton").__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    if not ptxas.exists():
        pytest.skip(f"this triton install has no CUDA toolchain ({ptxas} missing)")
    # Its own process: compiled mode, and a fresh cache so every kernel is really compiled.
    env = dict(os.environ, TRITON_INTERPRET="0", TRITON_CACHE_DIR=str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "tests.kernels.sm90_compile"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    failed = [r for r in results if not r["ok"]]
    assert not failed, json.dumps(failed, indent=1)
    assert len(results) == 7
    for r in results:
        assert r["shared_bytes"] <= H100_SHARED, r
