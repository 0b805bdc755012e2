"""One real server (a subprocess on a free loopback port) shared by the client's end-to-end tests."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

# The audio-video preset, so that both transports carry the model's own audio (issue 4, "Done means"),
# and the world preset next to it for keys and mouse.
MODEL = os.environ.get("STREAMGEN_E2E_MODEL", "tiny-av")
WORLD = "tiny-world"
MAX_SESSIONS = 2
START_TIMEOUT_S = 120.0  # loading + warm-up of both presets on a busy 2-core CPU


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def spawn_server(log_dir, model: str, *extra: str, max_sessions: int = MAX_SESSIONS):
    """``python -m streamgen.server`` on a free loopback port, until ready; yields (url, process)."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = log_dir / f"server-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "streamgen.server", "--host", "127.0.0.1", "--port", str(port),
                                 "--model", model, *extra, "--max-sessions", str(max_sessions),
                                 "--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _ready(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"server did not become ready (exit {proc.poll()}):\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    pytest.importorskip("streamgen.server.app", reason="the server app is not built yet")
    from tests.server.avatar_model import write_avatar_folder  # a small avatar model (test_avatar_record.py)

    avatar = write_avatar_folder(tmp_path_factory.mktemp("models"))
    with spawn_server(tmp_path_factory.mktemp("server"), MODEL, "--extra-model", WORLD, "--extra-model", str(avatar),
                      max_sessions=MAX_SESSIONS) as (url, _):
        yield url
