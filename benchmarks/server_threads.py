"""Where the server's CPU goes while sessions stream: cores per server thread, and optionally py-spy.

Runs ``python -m streamgen.server.bench --server-process`` (a real server process, real aiortc clients),
waits until its sessions stream, then reads every server thread's CPU time from ``/proc/PID/task/TID/stat``
at the start and the end of a window and names the threads with ``py-spy dump`` (Python's names: the
engine thread, the decode worker, the event loop, its executor threads; threads Python does not know,
such as library worker pools, are reported by their OS name). With ``--record FILE`` it also samples the
stacks of every thread over the window (``py-spy record --threads -f raw``; ``--gil`` to sample only the
thread holding the interpreter lock). Prints one JSON object: the bench's own result, ``thread_cores``
(thread name -> cores used over the window), ``window_s`` and the load average.

    python benchmarks/server_threads.py --sessions 4 --admission fixed --window 15 --record /tmp/p.raw
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

import httpx


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of every thread of ``pid`` so far, by thread id."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
            out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
        except (OSError, ValueError, IndexError):
            continue  # the thread ended
    return out


def py_spy() -> str:
    """The py-spy executable: on PATH, else beside this Python (a virtual environment's bin)."""
    beside = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return shutil.which("py-spy") or beside


def thread_names(pid: int) -> dict[int, str]:
    """Thread id -> name: Python's from ``py-spy dump``, else the OS name (``comm``)."""
    names = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                names[int(tid)] = "os:" + f.read().strip()
        except OSError:
            continue
    dump = subprocess.run([py_spy(), "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=60).stdout
    for tid, name in re.findall(r'^Thread (\d+) \([^)]*\): "([^"]*)"', dump, flags=re.M):
        names[int(tid)] = name
    return names


def server_pid(bench_pid: int) -> int | None:
    """The server process the bench started (its child running ``streamgen.server``)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/cmdline") as f:
                cmd = f.read().split("\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == bench_pid and "streamgen.server" in cmd and "--port" in cmd:
            return int(pid)
    return None


def streaming(pid: int) -> bool:
    """Whether the server at ``pid`` has sessions streaming (its /v1/stats fps per session above 0)."""
    with open(f"/proc/{pid}/cmdline") as f:
        cmd = f.read().split("\0")
    port = cmd[cmd.index("--port") + 1]
    try:
        stats = httpx.get(f"http://127.0.0.1:{port}/v1/stats", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return False
    return bool(stats.get("fps_per_session"))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="world")
    p.add_argument("--sessions", type=int, default=4)
    p.add_argument("--admission", choices=["measured", "fixed"], default="fixed")
    p.add_argument("--settle", type=float, default=6.0, help="seconds of streaming before the window")
    p.add_argument("--window", type=float, default=15.0)
    p.add_argument("--record", help="py-spy raw stacks of the window to this file")
    p.add_argument("--gil", action="store_true", help="with --record: sample only the thread holding the GIL")
    args = p.parse_args(argv)

    seconds = args.settle + args.window + 4
    bench = subprocess.Popen([sys.executable, "-m", "streamgen.server.bench", "--model", args.model, "--sessions",
                              str(args.sessions), "--seconds", str(seconds), "--server-process", "--admission",
                              args.admission], stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    pid = None
    while pid is None or not streaming(pid):
        if bench.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the bench ended or timed out before its sessions streamed (exit {bench.poll()})")
        time.sleep(0.5)
        pid = pid or server_pid(bench.pid)
    time.sleep(args.settle)
    names = thread_names(pid)
    load0, t0, cpu0 = os.getloadavg()[0], time.monotonic(), thread_cpu(pid)
    if args.record:
        cmd = [py_spy(), "record", "--pid", str(pid), "--duration", str(int(args.window)), "--rate", "50",
               "--threads", "--format", "raw", "--output", args.record] + (["--gil"] if args.gil else [])
        subprocess.run(cmd, capture_output=True, timeout=args.window + 60)
    else:
        time.sleep(args.window)
    cpu1, wall = thread_cpu(pid), time.monotonic() - t0
    names.update({tid: name for tid, name in thread_names(pid).items() if tid not in names})
    cores: dict[str, float] = {}
    for tid, c in cpu1.items():
        name = re.sub(r"_\d+$", "_N", names.get(tid, "os:?"))  # pool threads summed (uvloop_N, ...)
        cores[name] = cores.get(name, 0.0) + (c - cpu0.get(tid, 0.0)) / wall
    out, _ = bench.communicate(timeout=seconds + 120)
    result = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    busiest = sorted(cores.items(), key=lambda kv: -kv[1])
    print(json.dumps({"bench": result, "window_s": round(wall, 1),
                      "load_avg": [round(load0, 2), round(os.getloadavg()[0], 2)],
                      "thread_cores": {k: round(v, 3) for k, v in busiest if v >= 0.001},
                      "server_cores": round(sum(cores.values()), 3)}))


if __name__ == "__main__":
    main()
