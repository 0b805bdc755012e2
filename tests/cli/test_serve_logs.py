"""`streamgen serve` at its default log level: a WebRTC session leaves no per-candidate ICE lines
(aioice / aiortc) in the log, while the server's own INFO lines are there."""
from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
import urllib.request

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_default_log_level_keeps_ice_candidates_quiet(tmp_path):
    pytest.importorskip("aiortc")
    from streamgen_client import connect

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "streamgen.cli.main", "serve", "--model", "tiny", "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=1):
                    break
            except OSError:
                time.sleep(0.3)

        async def session() -> int:
            client = await connect(url, transport="webrtc", model="tiny", timeout=60)
            try:
                frames = 0
                while frames < 8:
                    frames += (await client.next_frame(30)) is not None
                return frames
            finally:
                await client.close()

        assert asyncio.run(session()) == 8
    finally:
        proc.terminate()
        proc.wait(20)
    text = log.read_text()
    assert "streamgen ready" in text and "POST /v1/offer" in text  # INFO lines of the server and uvicorn
    chatty = [line for line in text.splitlines() if " aioice" in line or " aiortc" in line]
    assert not chatty, chatty[:5]
