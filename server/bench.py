"""Serving benchmark: ``python -m streamgen.server.bench --model tiny --sessions 1 2 4 8 --seconds 10``.

For each session count it starts a fresh server in this process (uvicorn on a free loopback port; with
``--server-process`` in its own process), connects that many real aiortc clients and reports, per scenario:

- ``ttff_ms``: offer POSTed -> first decoded video frame at the client (p50 / max over sessions);
- ``server_overhead_ms``: frame ready (block out and its deadline reached) -> frame handed to aiortc;
- ``ready_to_decoded_ms``: frame ready -> decoded at the client (adds VP8 encode, RTP, loopback, decode);
- ``fps_per_session``: frames decoded per second per session after the first second (min / median /
  mean over sessions) and ``fps_total``, their sum;
- ``block_ms``: the engine's step time (a batched step of every due session of the model);
- ``admitted`` / ``measured_capacity`` / ``engine_batches``: with ``--admission measured`` (the default)
  the server admits by its measured capacity (server/capacity.py), so a count it cannot keep at frame
  rate shows as fewer admitted sessions; the engine's batch sizes (size -> steps) show the batching;
  ``batch_ms`` is admission's estimate per batch size at the end (the median of the recent steady steps
  where that size streamed, else the warm-up's step times ``in_server_slowdown``, how much slower the
  streaming steps ran than the warm-up's), ``warmup_batch_ms`` the warm-up's own step times;
- with ``--server-process``: ``cpu_cores``, the cores the server process and the clients' process used
  over the measured seconds, and ``load_avg``, the machine's 1-minute load average at their start and end
  (what else ran: on a shared machine say it with every number).
Both ends share one monotonic clock, so the cross-process-free timings need no clock sync.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import threading
import time

import httpx
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from .settings import ServerSettings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Client:
    def __init__(self, url: str, model: str) -> None:
        self.url, self.model = url, model
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.frames: list[tuple[int, float]] = []  # (rtp pts, decoded at)
        self.t_offer = 0.0
        self.session_id = ""
        self.refused = False  # the server answered busy (its measured capacity is full)
        self.tasks: list[asyncio.Task] = []

    async def connect(self, http: httpx.AsyncClient) -> None:
        pc = self.pc
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
        ch = pc.createDataChannel("control", ordered=True)
        seq = iter(range(1, 1 << 30))
        ch.on("open", lambda: self.tasks.append(asyncio.ensure_future(self._ping(ch, seq))))
        pc.on("track", lambda tr: self.tasks.append(asyncio.ensure_future(self._read(tr))))
        await pc.setLocalDescription(await pc.createOffer())
        self.t_offer = time.monotonic()
        r = await http.post(self.url + "/v1/offer", timeout=30, json={
            "sdp": pc.localDescription.sdp, "type": "offer", "model": self.model})
        if r.status_code == 503:
            self.refused = True
            return
        r.raise_for_status()
        self.session_id = r.json()["session_id"]
        await pc.setRemoteDescription(RTCSessionDescription(sdp=r.json()["sdp"], type="answer"))

    async def _ping(self, ch, seq) -> None:
        while ch.readyState == "open":
            ch.send(json.dumps({"type": "ping", "seq": next(seq), "t_ms": time.time() * 1000}))
            await asyncio.sleep(2.0)

    async def _read(self, track) -> None:
        try:
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    self.frames.append((frame.pts, time.monotonic()))
        except MediaStreamError:
            pass

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        await self.pc.close()


def _pct(a, q) -> float | None:
    return round(float(np.percentile(a, q)), 2) if len(a) else None


def run_scenario_subprocess(model: str, sessions: int, seconds: float, device: str | None,
                            measured: bool = True) -> dict:
    """The server in its own process (``python -m streamgen.server``): clients and server do not share a
    GIL. Server-side timings come from ``/v1/stats``; ready -> decoded needs both ends in one process."""
    import subprocess
    import sys

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "streamgen.server", "--model", model, "--port", str(port),
           "--idle-timeout", str(seconds + 30), "--log-level", "warning"]
    if not measured:
        cmd += ["--max-sessions", str(sessions)]
    if device:
        cmd += ["--device", device]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    try:
        wait_ready(url, proc)

        async def go():
            clients = await _connect(url, model, sessions)
            cpu0 = cpu_seconds(proc.pid), cpu_seconds(os.getpid()), time.monotonic(), os.getloadavg()[0]
            await asyncio.sleep(seconds)
            result = _measure(clients, {})
            result.update(cpu_shares(proc.pid, *cpu0))
            snap = httpx.get(url + "/v1/stats", timeout=5).json()  # while the sessions still stream
            await asyncio.gather(*(c.close() for c in clients))
            return result, snap

        result, snap = asyncio.run(go())
        spec = next(m for m in httpx.get(url + "/v1/models", timeout=5).json()["models"] if m["name"] == model)
    finally:
        proc.terminate()
        proc.wait(20)
    result.update(server_overhead_ms=snap["frame_overhead_ms"], ready_to_decoded_ms=None, model=model,
                  sessions=sessions, seconds=seconds, model_fps=spec["fps"], frame=f"{spec['width']}x{spec['height']}",
                  block_ms=snap["block_ms"], server="subprocess", admission="measured" if measured else "fixed",
                  measured_capacity=spec["measured_capacity"], batch_ms=spec["batch_ms"],
                  warmup_batch_ms=spec.get("warmup_batch_ms"), in_server_slowdown=spec.get("in_server_slowdown"),
                  engine_batches=snap["engine_batches"])
    return result


def wait_ready(url: str, proc=None, timeout_s: float = 120.0, poll_s: float = 0.1) -> int:
    """Poll ``url/readyz`` until it answers 200 (RuntimeError when ``proc``, a Popen, exits first or
    ``timeout_s`` passes); returns the polls made. One HTTP client (one kept-alive connection) for all of
    them: a new httpx client per poll builds an SSL context, about 22 ms of CPU, so polling ten times a
    second took a fifth of a core from the server's warm-up, the very steps admission is seeded with."""
    deadline = time.monotonic() + timeout_s
    polls = 0
    with httpx.Client(timeout=1) as http:
        while True:
            polls += 1
            try:
                if http.get(url + "/readyz").status_code == 200:
                    return polls
            except httpx.HTTPError:
                pass
            if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start (exit {None if proc is None else proc.poll()})")
            time.sleep(poll_s)


async def _connect(url: str, model: str, sessions: int) -> list[_Client]:
    """``sessions`` clients connected one after another (admission sees each); those refused are closed.
    One HTTP client posts every offer (a new one builds an SSL context: ~22 ms of CPU beside the server)."""
    clients = []
    async with httpx.AsyncClient() as http:
        for _ in range(sessions):
            c = _Client(url, model)
            await c.connect(http)
            clients.append(c)
    for c in clients:
        if c.refused:
            await c.close()
    return clients


def run_scenario(model: str, sessions: int, seconds: float, device: str | None, measured: bool = True) -> dict:
    import uvicorn

    from .app import create_app
    from .httpserver import uvicorn_options

    settings = ServerSettings(model=model, device=device, port=_free_port(), max_sessions=None if measured else sessions,
                              idle_timeout_s=seconds + 30)
    app = create_app(settings)
    state = app.state.streamgen
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level="warning",
                                           **uvicorn_options(settings)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{settings.port}"
    while not state.ready:
        if not thread.is_alive():
            raise RuntimeError("server failed to start")
        time.sleep(0.05)

    async def go():
        clients = await _connect(url, model, sessions)
        await asyncio.sleep(seconds)
        tracks = {sid: s.tracks[0] for sid, s in state.manager.sessions.items()}  # type: ignore[attr-defined]
        result = _measure(clients, tracks)
        await asyncio.gather(*(c.close() for c in clients))
        return result

    try:
        result = asyncio.run(go())
    finally:
        server.should_exit = True
        thread.join(15)
    spec = state.specs[model]
    snap = state.metrics.snapshot()
    capacity = state.manager.capacity.describe(model)
    result.update(model=model, sessions=sessions, seconds=seconds, model_fps=spec.fps,
                  frame=f"{spec.width}x{spec.height}", block_ms=snap["block_ms"], server="in-process",
                  admission="measured" if measured else "fixed", measured_capacity=capacity["measured_capacity"],
                  batch_ms=capacity["batch_ms"], warmup_batch_ms=capacity["warmup_batch_ms"],
                  in_server_slowdown=capacity["in_server_slowdown"],
                  engine_batches={str(k): n for k, n in sorted(state.engine.batches.items())})
    return result


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``; None elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    except (OSError, ValueError, IndexError):
        return None


def cpu_shares(server_pid: int, server0: float | None, clients0: float | None, t0: float, load0: float) -> dict:
    """Cores the server and the clients' process used over the measured window, and the load average at
    its start and end (the machine's other work: say it with every number)."""
    wall = time.monotonic() - t0
    server1, clients1 = cpu_seconds(server_pid), cpu_seconds(os.getpid())
    cores = {name: round((b - a) / wall, 2) if a is not None and b is not None else None
             for name, a, b in (("server", server0, server1), ("clients", clients0, clients1))}
    return {"cpu_cores": cores, "load_avg": [round(load0, 2), round(os.getloadavg()[0], 2)]}


def _measure(clients: list[_Client], tracks: dict) -> dict:
    ttff, fps, overhead, e2e = [], [], [], []
    for c in clients:
        if c.refused or not c.frames:
            continue
        ttff.append((c.frames[0][1] - c.t_offer) * 1000)
        t = np.array([a for _, a in c.frames])
        late = t[t > t[0] + 1.0]
        if len(late) > 1:
            fps.append((len(late) - 1) / (late[-1] - late[0]))
        hist = list(tracks[c.session_id].history) if c.session_id in tracks else []
        overhead += [(h - r) * 1000 for _, r, h in hist]
        # Match client frames to server frames by RTP timestamp (the client's carry a random offset).
        by_pts = {p: r for p, r, _ in hist}
        offsets = {}
        for p, _ in c.frames[:20]:  # the offset every early client frame agrees on
            for sp in by_pts:
                offsets[(p - sp) % (1 << 32)] = offsets.get((p - sp) % (1 << 32), 0) + 1
        if offsets:
            off = max(offsets, key=offsets.get)
            e2e += [(a - by_pts[(p - off) % (1 << 32)]) * 1000 for p, a in c.frames
                    if (p - off) % (1 << 32) in by_pts]
    return {
        "ttff_ms": {"p50": _pct(ttff, 50), "max": _pct(ttff, 100)},
        "server_overhead_ms": {"p50": _pct(overhead, 50), "p95": _pct(overhead, 95), "n": len(overhead)},
        "ready_to_decoded_ms": {"p50": _pct(e2e, 50), "p95": _pct(e2e, 95), "n": len(e2e)},
        "fps_per_session": {"min": _pct(fps, 0), "median": _pct(fps, 50),
                            "mean": round(float(np.mean(fps)), 2) if fps else None},
        "fps_total": round(float(np.sum(fps)), 2),
        "admitted": sum(not c.refused for c in clients),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m streamgen.server.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--device", default=None)
    p.add_argument("--sessions", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--server-process", action="store_true",
                   help="run the server in its own process (no shared GIL with the clients)")
    p.add_argument("--admission", choices=["measured", "fixed"], default="measured",
                   help="measured: the server admits by its measured capacity (sessions it cannot keep at frame "
                   "rate are refused and reported); fixed: max_sessions = the count")
    args = p.parse_args(argv)
    run = run_scenario_subprocess if args.server_process else run_scenario
    for n in args.sessions:
        print(json.dumps(run(args.model, n, args.seconds, args.device, args.admission == "measured")), flush=True)


if __name__ == "__main__":
    main()
