"""Batched steps of two (or more) source trees in lock-step: which tree's step costs less CPU.

    python benchmarks/batch_trees.py --sessions 4 --steps 30 /work/main /work/wt/fast5

One worker process per tree (its own ``.venv``, started in the tree, so it imports that tree's
``streamgen``) streams N sessions of a model (the shipped start context, seeds 0..N-1) and takes one
batched step (``streamgen.batch_step.step_batch``) when told; the driver tells each tree in turn, so a
load change on a shared machine hits every tree alike. Prints per tree the median wall, process CPU and
calling-thread CPU per step (the decoders run on a worker thread beside the refill: process CPU counts
both threads, thread CPU the engine thread's part), with the ratio to the first tree.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess

WORKER = r"""
import json, sys, time, torch
from streamgen import load_pipeline
from streamgen.batch_step import step_batch
torch.set_num_threads(int(sys.argv[3]))
pipe = load_pipeline(sys.argv[1])
sessions = [pipe.start(seed=i) for i in range(int(sys.argv[2]))]
for _ in range(3):
    step_batch(sessions)
print("ready", flush=True)
for _ in sys.stdin:
    w, c, t = time.perf_counter(), time.process_time(), time.thread_time()
    step_batch(sessions)
    print(json.dumps([time.perf_counter() - w, time.process_time() - c, time.thread_time() - t]), flush=True)
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("trees", nargs="+", help="source trees, each with its own .venv")
    p.add_argument("--model", default="world")
    p.add_argument("--sessions", type=int, default=4)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    workers = [subprocess.Popen([os.path.join(tree, ".venv", "bin", "python"), "-c", WORKER, args.model,
                                 str(args.sessions), str(args.threads)], cwd=tree, env=env, text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
               for tree in args.trees]
    try:
        for tree, w in zip(args.trees, workers):
            if w.stdout.readline().strip() != "ready":
                raise SystemExit(f"{tree}: the worker did not start (exit {w.poll()})")
        steps: dict[str, list] = {tree: [] for tree in args.trees}
        for _ in range(args.steps):
            for tree, w in zip(args.trees, workers):
                w.stdin.write("step\n")
                w.stdin.flush()
                steps[tree].append(json.loads(w.stdout.readline()))
    finally:
        for w in workers:
            w.stdin.close()
            w.wait(30)
    first = None
    for tree, rows in steps.items():
        wall, cpu, thread = (1000 * statistics.median(r[i] for r in rows) for i in range(3))
        first = first or (wall, cpu, thread)
        print(json.dumps({"tree": tree, "sessions": args.sessions, "threads": args.threads, "load_avg": os.getloadavg()[0],
                          "wall_ms_p50": round(wall, 1), "process_cpu_ms_p50": round(cpu, 1),
                          "thread_cpu_ms_p50": round(thread, 1), "wall_vs_first": round(wall / first[0], 3),
                          "process_cpu_vs_first": round(cpu / first[1], 3), "thread_cpu_vs_first": round(thread / first[2], 3)}))


if __name__ == "__main__":
    main()
