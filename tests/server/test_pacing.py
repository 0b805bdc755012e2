"""Pacing: a bursty, jittery producer with a stall; timestamps stay on the wall clock and never burst."""
from __future__ import annotations

import asyncio
import random
import time

import numpy as np
import pytest

from streamgen.server.pacing import Pacer, PacerConfig, paced


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    async def sleep(self, dt: float) -> None:
        self.t += max(0.0, dt)


def _check(emits: np.ndarray, pts_s: np.ndarray, period: float, max_late: float) -> None:
    wall = emits - emits[0]
    assert np.all(np.diff(pts_s) > 0), "timestamps must strictly increase"
    assert np.max(np.abs(pts_s - wall)) <= 0.020, np.max(np.abs(pts_s - wall))  # on the wall clock within 20 ms
    gaps = np.diff(emits)
    assert gaps.min() >= period - max_late - 0.002, gaps.min()  # never a burst of owed frames


def test_virtual_clock_jitter_stall_and_no_drift():
    fps, block = 16.0, 4
    period = 1 / fps
    clock = FakeClock()
    rng = random.Random(0)
    pacer = Pacer(PacerConfig(period_s=period, clock_rate=90000))
    # Blocks of 4 frames, each ready one block ahead of its playback time with jitter in [-30, +30] ms,
    # except block 20, which stalls for 0.7 s.
    ready = []
    for b in range(3000 // block):  # ~190 s of stream
        nominal = clock.t + b * block * period
        stall = 0.7 if b == 20 else 0.0  # the producer catches up after it (as the engine does)
        ready += [nominal - block * period + rng.uniform(-0.03, 0.03) + stall] * block  # one block of lead
    frames = iter(ready)

    async def get():
        r = next(frames)
        if r > clock.t:
            clock.t = r  # wait for the producer
        return r

    async def run():
        out = []
        for _ in range(len(ready)):
            item, pts, now, due = await paced(pacer, get, clock=clock, sleep=clock.sleep)
            out.append((now, pts / 90000))
        return np.array(out)

    out = asyncio.run(run())
    _check(out[:, 0], out[:, 1], period, pacer.config.max_late_s)
    assert pacer.reanchors == 1  # the stall re-anchored once; jitter inside the lead never did
    # No drift: ~3 minutes after the stall every frame is still exactly on its schedule.
    tail = out[-1000:]
    assert np.allclose(np.diff(tail[:, 1]), period, atol=1.5 / 90000)


def test_real_time_producer_with_jitter_and_stall():
    fps, block = 25.0, 3
    period = 1 / fps

    async def run():
        q: asyncio.Queue = asyncio.Queue()
        rng = random.Random(1)

        async def producer():
            for b in range(30):  # 90 frames, 3.6 s of stream plus the stall
                await asyncio.sleep(block * period + rng.uniform(-0.02, 0.02) + (0.4 if b == 12 else 0.0))
                for i in range(block):
                    q.put_nowait(b * block + i)

        task = asyncio.ensure_future(producer())
        pacer = Pacer(PacerConfig(period_s=period, clock_rate=90000))
        out = []
        for _ in range(90):
            item, pts, now, due = await paced(pacer, q.get)
            out.append((time.monotonic(), pts / 90000, item))
        await task
        return np.array(out), pacer

    out, pacer = asyncio.run(run())
    assert list(out[:, 2]) == list(range(90))  # nothing lost, in order
    _check(out[:, 0], out[:, 1], period, pacer.config.max_late_s)
    assert pacer.reanchors >= 1
    # After the stall the cadence is the normal one, not a catch-up burst.
    gaps = np.diff(out[:, 0])
    assert np.median(gaps) == pytest.approx(period, abs=0.004)


def test_pacer_config_rejects_bad_values():
    with pytest.raises(ValueError, match="period_s"):
        PacerConfig(period_s=0, clock_rate=90000)
    with pytest.raises(ValueError, match="clock_rate"):
        PacerConfig(period_s=0.1, clock_rate=0)
