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
    wall = time.monotonic() - t0
    # Cores x the window is the CPU it saw (at least what was burned; the share is rounded to 0.01), whatever
    # the wall time on a loaded machine: a share, not a timing.
    assert shares["cpu_cores"]["server"] * wall >= after - before - 0.005 * wall - 0.01
    assert 0 < shares["cpu_cores"]["server"] <= os.cpu_count() + 0.1
    assert len(shares["load_avg"]) == 2 and all(v >= 0 for v in shares["load_avg"])
    assert cpu_seconds(-1) is None  # no such process: no number rather than an error


def test_the_readiness_wait_polls_over_one_connection():
    """Issue 18: the bench polled /readyz with a new httpx client every 0.1 s (an SSL context each, about
    22 ms of CPU), a fifth of a core taken from the server's warm-up on this 2-core machine. Now one client
    and one kept-alive connection serve every poll."""
    import http.server
    import threading

    from streamgen.server.bench import wait_ready

    seen = {"connections": 0, "requests": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive

        def setup(self):
            seen["connections"] += 1
            super().setup()

        def do_GET(self):
            seen["requests"] += 1
            status = 200 if seen["requests"] > 5 else 503  # ready at the sixth poll
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        polls = wait_ready(f"http://127.0.0.1:{server.server_address[1]}", poll_s=0.01)
    finally:
        server.shutdown()
    assert polls == 6 and seen["requests"] == 6
    assert seen["connections"] == 1
