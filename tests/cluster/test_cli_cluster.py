"""``streamgen serve --cluster auto`` as a user runs it: a real process that starts its own Ray, serves a
session through the one endpoint, and on Ctrl-C stops Serve and Ray, leaving no Ray process behind."""
from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.server.ws_client import WsClient

pytestmark = pytest.mark.slow


def _ray_daemons() -> set[int]:
    out = subprocess.run(["ps", "-eo", "pid=,comm="], capture_output=True, text=True).stdout
    return {int(line.split()[0]) for line in out.splitlines() if line.split()[1] in ("gcs_server", "raylet")}


def test_serve_cluster_auto_serves_then_stops_everything():
    pytest.importorskip("ray", reason="needs the streamgen[cluster] extra")
    before = _ray_daemons()
    port = random.randint(20000, 60000)
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "streamgen.server", "--cluster", "auto", "--model", "tiny",
                             "--replicas", "1", "--port", str(port), "--warmup-blocks", "1", "--log-level", "warning"])
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, f"streamgen serve --cluster exited with {proc.returncode}"
            assert time.monotonic() < deadline, "the cluster did not get ready"
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        with urllib.request.urlopen(url + "/v1/models", timeout=10) as r:
            models = json.loads(r.read())
        assert models["cluster"]["replicas"] == 1 and models["models"][0]["name"] == "tiny"

        async def one_session() -> int:
            async with WsClient(url) as c:
                assert (await c.start("tiny"))["type"] == "started"
                await c.wait_for(lambda: len(c.media) >= 4, timeout=20, what="frames")
                return len(c.media)
        assert asyncio.run(one_session()) >= 4
        assert _ray_daemons() - before, "no Ray daemons while serving?"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(90)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert rc == 0
    deadline = time.monotonic() + 30
    while _ray_daemons() - before:
        assert time.monotonic() < deadline, f"Ray daemons left running: {_ray_daemons() - before}"
        time.sleep(0.5)
