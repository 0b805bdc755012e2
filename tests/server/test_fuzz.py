"""Seeded fuzzing of both transports and the HTTP routes while a healthy session streams (issue 14).

Fuzzing clients run in processes of their own (tests/server/fuzz_worker.py). Checks: no unhandled
exception in the server log (scanned), no slot held once the fuzzing clients have left, and a healthy
WebRTC session whose frames leave the server at >= 90 % of its frame rate (in every 2 s window
with STREAMGEN_FUZZ_STRICT=1; over the whole run by default, for machines shared with other jobs). The default
run sends about 2,000 cases (well under a minute); ``-m slow`` sends about 20,000.
"""
from __future__ import annotations

import asyncio
import collections
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import running_server, unhandled
from .rtc_client import RtcClient

SEED = 1414
WORKERS = 2
WINDOW_S = 2.0  # the healthy session's frame rate is checked over windows this long
ROOT = Path(__file__).resolve().parents[2]


def window_rates(times: list[float], window_s: float) -> list[float]:
    """Frames per second over every window of ``window_s`` that starts at a frame."""
    rates, j = [], 0
    for i, t in enumerate(times):
        while j < len(times) and times[j] - t < window_s:
            j += 1
        if j == len(times):
            break
        rates.append((j - i) / window_s)
    return rates


def _fuzz(cases_target: int, seed: int = SEED) -> None:
    # Admission by measured capacity (the default): the server, not the test, keeps the healthy stream whole.
    settings = dict(client_sessions_per_min=1e6, client_session_burst=10_000, client_messages_per_s=1e6,
                    client_message_burst=1_000_000, connect_timeout_s=3.0)
    with running_server(**settings) as server:
        fps = server.state.specs["tiny"].fps

        async def run():
            healthy = await RtcClient(server.url).connect()
            await healthy.wait_for(lambda: len(healthy.video) >= 5, what="healthy frames")
            track = server.state.manager.sessions[healthy.session_id].tracks[0]

            async def keepalive():  # a real client pings (the server reclaims a silent session)
                while True:
                    await asyncio.sleep(2.0)
                    healthy.send(json.dumps({"type": "ping", "seq": next(healthy.seq), "t_ms": 1.0}))

            pinger = asyncio.ensure_future(keepalive())
            n0 = len(track.history)
            t0 = time.monotonic()
            procs = [await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.server.fuzz_worker", server.url, str(seed + i),
                str(cases_target // WORKERS), cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                for i in range(WORKERS)]
            outs = []
            for p in procs:
                out, err = await p.communicate()
                lines = out.decode().strip().splitlines()
                assert p.returncode == 0 and lines, f"fuzz worker exited {p.returncode}: {err.decode()[-2000:]}"
                outs.append(json.loads(lines[-1]))
            elapsed = time.monotonic() - t0
            handed = [h[2] for h in list(track.history)[n0:]]  # when each frame left the server
            pinger.cancel()
            await asyncio.gather(pinger, return_exceptions=True)
            last = next(healthy.seq)
            healthy.send(json.dumps({"type": "ping", "seq": last, "t_ms": 1.0}))
            await healthy.wait_for(lambda: any(m.get("reply_to") == last for m in healthy.of_type("pong")),
                                   what="the healthy session answers")
            await healthy.close()
            return outs, handed, elapsed

        outs, handed, elapsed = asyncio.run(run())
        deadline = time.monotonic() + 15
        while (server.state.manager.in_use() or server.state.engine.session_count()) and time.monotonic() < deadline:
            time.sleep(0.1)
        in_use, engine = server.state.manager.in_use(), server.state.engine.session_count()
        log = server.log.getvalue()

    cases = sum(o["cases"] for o in outs)
    codes = sum((collections.Counter(o["codes"]) for o in outs), collections.Counter())
    rates = window_rates(handed, WINDOW_S)
    print(f"fuzz: {cases} cases in {elapsed:.1f} s; healthy session min {min(rates):.2f} fps of {fps:g} over "
          f"{len(rates)} windows of {WINDOW_S:g} s; answers {dict(codes.most_common(14))}")
    assert cases >= cases_target - WORKERS
    assert not unhandled(log), unhandled(log)[:10]
    assert not [line for line in log.splitlines() if line.startswith("ERROR")], log[-3000:]
    assert in_use == 0 and engine == 0, (in_use, engine)
    # The fuzz reached every fault class of the parser, on both transports and the HTTP routes.
    for code in ("bad_json", "bad_field", "unknown_type", "out_of_range", "too_large", "http_400", "http_200"):
        assert codes[code] > 0, (code, codes)
    # At >= 90 % of its frame rate: in every window when the machine is the server's (STREAMGEN_FUZZ_STRICT=1);
    # on a machine shared with other jobs (load average 8 on 2 cores while this was written) single windows
    # lose frames to the neighbours, so by default the rate over the whole fuzz run must hold.
    overall = (len(handed) - 1) / (handed[-1] - handed[0])
    held = sum(r >= 0.9 * fps for r in rates) / len(rates)
    print(f"fuzz: healthy session {overall:.2f} fps over the run, {held:.0%} of the windows at >= 90 %")
    assert len(rates) >= 3
    if os.environ.get("STREAMGEN_FUZZ_STRICT") == "1":
        assert min(rates) >= 0.9 * fps, (min(rates), fps)
    assert overall >= 0.9 * fps, (overall, held, min(rates), fps)


def test_fuzz_both_transports_and_http():
    _fuzz(2000)


@pytest.mark.slow
def test_fuzz_long():
    _fuzz(20000, seed=SEED + 100)
