"""Cluster benchmark on this machine; prints one JSON object.

1. ``first_frame``: time from a client's offer (WebRTC) or ``start`` (WebSocket) to its first video frame,
   through a local Ray Serve cluster (gateway + replicas) and through a single ``streamgen serve`` process,
   measured interleaved (single, cluster, single, ...) so that load from other users of the machine hits
   both alike.
2. ``sessions_per_replica``: for each model, sessions one replica (one CPU core) streams at full rate:
   sessions are added one at a time (WebSocket) until one of them receives less than ``--full`` of the
   model's frame rate over ``--window`` seconds, twice in a row (the 1-minute load average is recorded).

Usage: ``python benchmarks/cluster_bench.py [--rounds 10] [--models tiny,world] [--window 5]``
(needs the ``streamgen[cluster]`` extra; takes a few minutes; starts and stops its own Ray).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
import urllib.request

from streamgen_client import connect


def _wait_ready(url: str, timeout: float = 300.0, replicas: int = 0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as r:
                if r.status == 200 and json.loads(r.read()).get("replicas", replicas) >= replicas:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not get ready in {timeout} s")


async def _first_frame(url: str, transport: str, model: str) -> float:
    t0 = time.perf_counter()
    client = await connect(url, transport=transport, model=model, timeout=60)
    try:
        async for _ in client.frames():
            return time.perf_counter() - t0
    finally:
        await client.close()
    raise RuntimeError("the session ended before its first frame")


def _summary(xs: list[float]) -> dict:
    xs = sorted(xs)
    return {"median_ms": round(statistics.median(xs) * 1000, 1), "min_ms": round(xs[0] * 1000, 1),
            "max_ms": round(xs[-1] * 1000, 1), "n": len(xs)}


class _Counted:
    """A WebSocket session whose video frames are timestamped on arrival, from its start."""

    def __init__(self, client) -> None:
        self.client, self.arrivals = client, []
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for _ in self.client.frames():
            self.arrivals.append(time.monotonic())

    def rate(self, t0: float, t1: float) -> float:
        return sum(1 for t in self.arrivals if t0 <= t < t1) / (t1 - t0)

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.client.close()


async def _capacity(url: str, model: str, fps: float, full: float, window: float, limit: int) -> dict:
    sessions: list[_Counted] = []
    steps = []
    try:
        for n in range(1, limit + 1):
            sessions.append(_Counted(await connect(url, transport="ws", model=model, timeout=60)))
            await asyncio.sleep(1.0)  # the newest session settles (its first blocks)
            for _ in range(2):  # a second window before giving up: other users' load comes in bursts
                t0 = time.monotonic()
                await asyncio.sleep(window)
                rates = [s.rate(t0, t0 + window) for s in sessions]
                if min(rates) >= full * fps:
                    break
            steps.append({"sessions": n, "min_fps": round(min(rates), 2), "mean_fps": round(sum(rates) / n, 2),
                          "load_1min": round(os.getloadavg()[0], 1)})
            if min(rates) < full * fps:
                break
    finally:
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
    ok = [s["sessions"] for s in steps if s["min_fps"] >= full * fps]
    return {"model": model, "fps": fps, "sessions_at_full_rate": max(ok) if ok else 0, "steps": steps}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=10, help="interleaved first-frame rounds per transport (0: skip)")
    ap.add_argument("--models", default="tiny,world", help="models for sessions per replica")
    ap.add_argument("--window", type=float, default=5.0, help="seconds each frame-rate measurement lasts")
    ap.add_argument("--full", type=float, default=0.95, help="share of the model's fps that counts as full rate")
    ap.add_argument("--limit", type=int, default=12, help="most sessions tried per replica")
    ap.add_argument("--ahead-blocks", type=int, help="the replicas' --ahead-blocks (default: the server's)")
    args = ap.parse_args()

    import ray
    from ray import serve

    from streamgen.server.cluster import launch
    from streamgen.server.cluster.config import ClusterConfig

    out: dict = {"machine": {"cpus": os.cpu_count(), "note": "shared with other users: numbers are noisy"},
                 "args": vars(args)}
    single_port, cluster_port = random.sample(range(20000, 60000), 2)
    single_url, cluster_url = f"http://127.0.0.1:{single_port}", f"http://127.0.0.1:{cluster_port}"
    single = subprocess.Popen([sys.executable, "-m", "streamgen.server", "--model", "tiny", "--port", str(single_port),
                               "--warmup-blocks", "1", "--log-level", "warning"])
    launch.start_local_ray(num_cpus=2)
    try:
        launch.deploy(ClusterConfig(replicas=1, num_cpus=1, replica_host="127.0.0.1",
                                    server={"model": "tiny", "warmup_blocks": 1}),
                      "127.0.0.1", cluster_port)
        _wait_ready(single_url)
        _wait_ready(cluster_url, replicas=1)
        times: dict = {f"{where}_{tr}": [] for where in ("single", "cluster") for tr in ("webrtc", "ws")}
        for _ in range(args.rounds):
            for tr in ("webrtc", "ws"):
                for where, url in (("single", single_url), ("cluster", cluster_url)):
                    times[f"{where}_{tr}"].append(asyncio.run(_first_frame(url, tr, "tiny")))
        if args.rounds:
            out["first_frame"] = {"model": "tiny", **{k: _summary(v) for k, v in times.items()}}
        single.terminate()
        single.wait(30)
        serve.delete("streamgen")
        out["sessions_per_replica"] = []
        for model in args.models.split(","):
            server = {"model": model, "warmup_blocks": 1}
            if args.ahead_blocks:
                server["ahead_blocks"] = args.ahead_blocks
            cfg = ClusterConfig(replicas=1, num_cpus=1, sessions_per_replica=args.limit, replica_host="127.0.0.1",
                                server=server)
            launch.deploy(cfg, "127.0.0.1", cluster_port)
            _wait_ready(cluster_url, replicas=1)
            with urllib.request.urlopen(cluster_url + "/v1/models", timeout=10) as r:
                fps = json.loads(r.read())["models"][0]["fps"]
            out["sessions_per_replica"].append(
                asyncio.run(_capacity(cluster_url, model, fps, args.full, args.window, args.limit)))
            serve.delete("streamgen")
        print(json.dumps(out, indent=1), flush=True)  # before Ray's shutdown, which may write to stdout
    finally:
        if single.poll() is None:
            single.terminate()
            single.wait(30)
        serve.shutdown()
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
