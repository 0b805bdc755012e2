#!/usr/bin/env bash
# The GPU check of streamgen, one script, about 12 minutes on an H100 (the compiled stage autotunes):
#   1. the gpu-marked kernel tests (compiled Triton vs references in bf16 / fp32; torch.compile of a
#      block step without recompiles or host syncs across rolling steps);
#   2. the kernel micro-benchmarks against eager torch (benchmarks/kernel_bench.py);
#   3. `streamgen bench --model wan2.1-1.3b --device cuda` (random weights), with the default
#      attention backend and with --attention triton (the transformer with the preview decoder), and
#      batched sessions (`--sessions 1 2 4`: total and per-session frames/s, reported under "batched");
#   4. end to end with a real decoder (benchmarks/e2e_bench.py, random weights in the real shapes at
#      832x480): the full Wan VAE and the tiny decoder, with SDPA, triton, and triton + torch.compile:
#      frames/s and time to first frame including the decode, decode time per block, peak memory.
# Prints one JSON summary on stdout; logs and raw outputs go to $GPU_CHECK_OUT (default: a temp dir).
# Every stage has its own time limit, so a hung stage still leaves a summary. Exit status: 0 when the
# tests passed and every stage produced its JSON, 1 otherwise.
#
# Usage (repository root, environment with CUDA torch + triton + streamgen installed):
#   bash benchmarks/gpu_check.sh            # PYTHON=... to pick the interpreter, BENCH_BLOCKS=... blocks
#   TESTS_S=90 KERNEL_BENCH_S=40 E2E_S=45 DECODE_S=60 bash benchmarks/gpu_check.sh   # shorter stage limits (a short lease)
# Without an installed streamgen (a bare GPU machine), the package is laid out under a temp dir as
# setup.py maps it (kernels/, server/, training/ inside streamgen/) and put on PYTHONPATH.
# The decode stage (benchmarks/decode_bench.py) times decoding alone, per block of 3 latent frames at
# 832x480, for the full Wan2.1 VAE and the tiny decoder (random weights in the real shapes); it is
# reported under "decode" and not required for the exit status (a bare machine may lack diffusers).
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python}
OUT=${GPU_CHECK_OUT:-$(mktemp -d -t streamgen-gpu-check.XXXXXX)}
BLOCKS=${BENCH_BLOCKS:-30}
DECODE_S=${DECODE_S:-90}
TESTS_S=${TESTS_S:-150}
KERNEL_BENCH_S=${KERNEL_BENCH_S:-80}
E2E_S=${E2E_S:-110}
DECODER_BLOCKS=${DECODER_BLOCKS:-20} # blocks of the end-to-end stages with a real decoder
COMPILE_S=${COMPILE_S:-300}          # the compiled stage autotunes first
mkdir -p "$OUT"
export TRITON_INTERPRET=0 # compiled kernels (the test conftest defaults to the interpreter otherwise)
export PYTHONUNBUFFERED=1
start=$(date +%s)

if ! "$PY" -c 'import streamgen.kernels' >/dev/null 2>&1; then
  source scripts/package_layout.sh
  SITE=$(layout_package) || { echo "gpu_check: could not lay out the package" >&2; exit 1; }
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONSAFEPATH=1 # $PWD: the tests package
fi

exec 3>&2 # progress lines go to the original stderr, not into the stage logs
if command -v streamgen >/dev/null 2>&1; then
  STREAMGEN=(streamgen)
else # the console script is not on PATH: the same entry point through the interpreter
  STREAMGEN=("$PY" -c 'import sys; from streamgen.cli.main import main; sys.exit(main(sys.argv[1:]))')
fi

stage() { # stage NAME LIMIT_S CMD... : run with a time limit, record rc and seconds
  local name=$1 limit=$2
  shift 2
  local t0=$(date +%s)
  echo "[gpu_check] $name (limit ${limit}s)" >&3
  timeout --kill-after=10 "$limit" "$@"
  local rc=$?
  echo "$name $rc $(($(date +%s) - t0))" >>"$OUT/stages.txt"
  echo "[gpu_check] $name rc=$rc" >&3
}

: >"$OUT/stages.txt"
"$PY" -c 'import torch, json; print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda,
  "device": torch.cuda.get_device_name() if torch.cuda.is_available() else None}))' >"$OUT/env.json" 2>"$OUT/env.log"

stage tests "$TESTS_S" "$PY" -m pytest -m gpu tests/kernels -q -p no:cacheprovider -rfEs --import-mode=append \
  --junitxml "$OUT/gpu_tests.xml" >"$OUT/gpu_tests.log" 2>&1
stage kernel_bench "$KERNEL_BENCH_S" "$PY" benchmarks/kernel_bench.py >"$OUT/kernel_bench.json" 2>"$OUT/kernel_bench.log"
stage decode_bench "$DECODE_S" "$PY" benchmarks/decode_bench.py --device cuda >"$OUT/decode_bench.json" 2>"$OUT/decode_bench.log"
stage e2e_default "$E2E_S" "${STREAMGEN[@]}" bench --model wan2.1-1.3b --device cuda --blocks "$BLOCKS" --quiet \
  >"$OUT/e2e_default.json" 2>"$OUT/e2e_default.log"
stage e2e_triton "$E2E_S" "${STREAMGEN[@]}" bench --model wan2.1-1.3b --device cuda --blocks "$BLOCKS" --quiet --attention triton \
  >"$OUT/e2e_triton.json" 2>"$OUT/e2e_triton.log"
stage batched "$E2E_S" "${STREAMGEN[@]}" bench --model wan2.1-1.3b --device cuda --blocks 10 --sessions 1 2 4 --quiet \
  >"$OUT/batched.json" 2>"$OUT/batched.log"
E2E=("$PY" benchmarks/e2e_bench.py --blocks "$DECODER_BLOCKS" --cache "$OUT/decoders")
for dec in vae tiny; do
  for att in sdpa triton; do
    stage "e2e_${dec}_${att}" "$E2E_S" "${E2E[@]}" --decoder "$dec" --attention "$att" \
      >"$OUT/e2e_${dec}_${att}.json" 2>"$OUT/e2e_${dec}_${att}.log"
  done
done
stage e2e_tiny_compiled "$COMPILE_S" "${E2E[@]}" --decoder tiny --attention triton --compile \
  >"$OUT/e2e_tiny_compiled.json" 2>"$OUT/e2e_tiny_compiled.log"

"$PY" - "$OUT" "$(($(date +%s) - start))" <<'PYEOF'
import json, sys
import xml.etree.ElementTree as ET
from pathlib import Path

out, wall = Path(sys.argv[1]), int(sys.argv[2])

def load_json(name):
    """The JSON object a stage printed (the whole file, else its last parseable {...} block)."""
    path = out / name
    if not path.exists():
        return None
    text = path.read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    for start in [i for i, ch in enumerate(text) if ch == "{"][::-1]:
        try:
            return json.loads(text[start:])
        except json.JSONDecodeError:
            continue
    return {"unparsed_tail": text[-500:]}

stages = {}
for line in (out / "stages.txt").read_text().splitlines():
    name, rc, secs = line.split()
    stages[name] = {"rc": int(rc), "seconds": int(secs), "timed_out": rc in ("124", "137")}

tests = {"rc": stages.get("tests", {}).get("rc")}
try:
    root = ET.parse(out / "gpu_tests.xml").getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    total, fail, err, skip = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
    tests.update(passed=total - fail - err - skip, failed=fail, errors=err, skipped=skip,
                 failing=[f"{c.get('classname')}::{c.get('name')}" for c in suite.iter("testcase")
                          if c.find("failure") is not None or c.find("error") is not None])
except (OSError, ET.ParseError) as exc:
    tests["junit_error"] = str(exc)
    log = out / "gpu_tests.log"
    tests["log_tail"] = log.read_text()[-1500:] if log.exists() else None

def e2e(name):
    data = load_json(name) or {}
    keys = ("attention_backend", "dtype", "decoder", "compiled", "frames_per_second", "time_to_first_frame_s",
            "block_ms_p50", "block_ms_p95", "decode_ms_p50", "peak_memory_mb", "resolution", "blocks")
    picked = {k: data[k] for k in keys if k in data}
    if not picked:
        log = out / name.replace(".json", ".log")
        picked = {"error": (log.read_text()[-800:] if log.exists() else "no output")}
    return picked

bench = load_json("kernel_bench.json") or {}
batched = load_json("batched.json")  # one result per session count (streamgen bench --sessions 1 2 4)
batched = [{k: r.get(k) for k in ("sessions", "frames_per_second", "frames_per_second_per_session", "block_ms_p50",
                                  "peak_memory_mb")} for r in batched] if isinstance(batched, list) else \
    {"error": (out / "batched.log").read_text()[-800:] if (out / "batched.log").exists() else "no output"}
summary = {
    "env": load_json("env.json"),
    "wall_s": wall,
    "stages": stages,
    "gpu_tests": tests,
    "kernel_bench": bench,
    "e2e": {"default": e2e("e2e_default.json"), "triton": e2e("e2e_triton.json"),
            **{f"{d}_{a}": e2e(f"e2e_{d}_{a}.json") for d in ("vae", "tiny") for a in ("sdpa", "triton")},
            "tiny_compiled": e2e("e2e_tiny_compiled.json")},
    "batched": batched,
    "out_dir": str(out),
}
ok = tests.get("passed", 0) > 0 and tests.get("failed", 1) == 0 and tests.get("errors", 1) == 0 and "kernels" in bench \
    and "frames_per_second" in summary["e2e"]["default"] and "frames_per_second" in summary["e2e"]["triton"]
# The stages with a real decoder are reported, not required, like the decode stage (they need diffusers).
summary["ok"] = bool(ok)
log = out / "decode_bench.log"
summary["decode"] = load_json("decode_bench.json") or {"error": log.read_text()[-800:] if log.exists() else "no output"}
print(json.dumps(summary, indent=2))
sys.exit(0 if ok else 1)
PYEOF
