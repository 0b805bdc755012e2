"""The server bench's CPU accounting (server/bench.py): a process's CPU seconds from /proc, and the cores
used over a window, beside the load average."""
import os
import sys
import time

import pytest

from streamgen.server.bench import cpu_seconds, cpu_shares

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_cpu_seconds_follow_work_and_the_shares_count_cores():
    t0, before = time.monotonic(), cpu_seconds(os.getpid())
    end = time.process_time() + 0.3
    while time.process_time() < end:  # burn 0.3 s of this process's CPU
        pass
    after = cpu_seconds(os.getpid())
    assert after - before >= 0.25  # /proc counts in clock ticks (10 ms)
    shares = cpu_shares(os.getpid(), before, before, t0, os.getloadavg()[0])
    assert 0.5 <= shares["cpu_cores"]["server"] <= os.cpu_count() + 0.1
    assert len(shares["load_avg"]) == 2 and all(v >= 0 for v in shares["load_avg"])
    assert cpu_seconds(-1) is None  # no such process: no number rather than an error
