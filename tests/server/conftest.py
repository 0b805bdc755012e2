"""A real server (uvicorn on a free loopback port, in a thread of the test process) and an aiortc client."""
from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
import uvicorn

from streamgen.server.app import create_app
from streamgen.server.httpserver import StreamgenServer, uvicorn_options
from streamgen.server.settings import ServerSettings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningServer:
    def __init__(self, log_level: str = "warning", capture_level: int = logging.INFO, **overrides) -> None:
        overrides.setdefault("model", "tiny")  # the tests pin their model; the default follows what ships
        overrides.setdefault("port", free_port())  # a given port: e.g. a server restarted where the last one ran
        self.settings = ServerSettings(host="127.0.0.1", warmup_blocks=1, **overrides)
        self.app = create_app(self.settings)
        self.state = self.app.state.streamgen
        self.url = f"http://127.0.0.1:{self.settings.port}"
        options = {**uvicorn_options(self.settings), "ws_ping_interval": None}  # the server's own limits
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.settings.port, log_level=log_level,
                                lifespan="on", **options)
        self.server = StreamgenServer(config, self.app)
        self.thread = threading.Thread(target=self.server.run, name="test-uvicorn", daemon=True)
        # The server's log, captured once uvicorn.Config has configured its loggers (that drops handlers
        # added before): ``server.log.getvalue()``, scanned by the tests for unhandled exceptions.
        self._capture = captured_log(capture_level)
        self.log = self._capture.__enter__()

    def __enter__(self) -> "RunningServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not self.thread.is_alive():
                raise RuntimeError(f"server on {self.url} failed to start (see the log above)")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server on {self.url} did not get ready")

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self._capture.__exit__(None, None, None)

    def get_json(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=5) as r:
            return json.loads(r.read())

    def run_on_loop(self, fn):
        """Run ``fn()`` on the server's event loop (to read state without racing it)."""
        loop = self.server_loop
        fut = asyncio.run_coroutine_threadsafe(_call(fn), loop)
        return fut.result(5)

    @property
    def server_loop(self) -> asyncio.AbstractEventLoop:
        for task_loop in [getattr(self.state.manager, "_reaper", None)]:
            if task_loop is not None:
                return task_loop.get_loop()
        raise RuntimeError("server loop unknown")


async def _call(fn):
    return fn()


# What an unhandled fault leaves in the server log (uvicorn's, asyncio's and logging's own wording).
UNHANDLED_MARKERS = ("Traceback", "Exception in ASGI application", "Task was destroyed but it is pending",
                     "Task exception was never retrieved", "Exception in callback", "Unhandled exception")


@contextlib.contextmanager
def captured_log(level: int = logging.INFO):
    """Everything the server logs (root, uvicorn, uvicorn.access, asyncio) into a StringIO while inside."""
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    loggers = [logging.getLogger(n) for n in ("", "uvicorn", "uvicorn.access")]
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(level)
    for lg in loggers:
        lg.addHandler(handler)
    try:
        yield buf
    finally:
        for lg in loggers:
            lg.removeHandler(handler)
        root.setLevel(old_level)


def unhandled(log_text: str) -> list[str]:
    """The log lines that show an exception nothing handled."""
    return [line for line in log_text.splitlines() if any(m in line for m in UNHANDLED_MARKERS)]


@pytest.fixture
def server():
    with RunningServer(max_sessions=3) as s:
        yield s


@contextlib.contextmanager
def running_server(**overrides):
    with RunningServer(**overrides) as s:
        yield s


@pytest.fixture(scope="session")
def avatar_server(tmp_path_factory):
    """A server of the small avatar model folder (``avatar_model.py``), shared by the avatar tests."""
    from .avatar_model import write_avatar_folder

    with RunningServer(model=str(write_avatar_folder(tmp_path_factory.mktemp("models"))), max_sessions=3) as s:
        yield s
