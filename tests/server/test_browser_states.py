"""The page's states in headless Chromium: the prompt box only for models that take a prompt, the
WebSocket fallback when WebRTC cannot connect, a recording that downloads a playable file, the reason
shown after the server stops, and Reconnect to a server started again on the same port.

One browser, two pages, to keep the cost of Chromium on 2 cores down.
"""
from __future__ import annotations

import time

import av
import numpy as np
import pytest

from streamgen.pipeline import shipped_models

pytest.importorskip("playwright")
from playwright.sync_api import sync_playwright  # noqa: E402

from .conftest import RunningServer  # noqa: E402
from .test_browser import CHROMIUM_ARGS  # noqa: E402

WORLD = "world" if "world" in shipped_models() else "tiny-world"  # a model that takes no prompt
# WebRTC that cannot connect: only relay candidates allowed, and no TURN server to relay through.
BLOCK_WEBRTC = """(() => {
  const Native = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends Native {
    constructor(config) { super({ ...(config || {}), iceTransportPolicy: "relay" }); }
  };
})();"""
CANVAS = """() => { const c = document.getElementById('canvas');
  const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  return {w: c.width, h: c.height, px: Array.from(px)}; }"""
PLAYING = "(() => { const v = document.getElementById('video'); return v.videoWidth > 0 && v.currentTime > 0.5; })()"


def open_page(browser, url: str, init_script: str | None = None):
    page = browser.new_page(accept_downloads=True)
    if init_script:
        page.add_init_script(init_script)
    page.goto(url + "/")
    page.wait_for_function("window.streamgen.models.length > 0", timeout=10_000)
    return page


def wait_sessions(server: RunningServer, n: int, timeout_s: float = 10.0) -> int:
    deadline = time.monotonic() + timeout_s
    while len(server.state.manager.sessions) != n and time.monotonic() < deadline:
        time.sleep(0.05)
    return len(server.state.manager.sessions)


@pytest.mark.browser
def test_page_states(tmp_path):
    models = dict(model=WORLD, extra_models=["tiny"], connect_timeout_s=5.0)
    server = RunningServer(**models).__enter__()
    second = None
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
            try:
                page = open_page(browser, server.url)
                # The prompt box: hidden for the world (no prompt), shown for tiny, hidden again.
                prompt_shown = [page.is_visible("#prompt-form")]
                page.select_option("#model", "tiny")
                prompt_shown.append(page.is_visible("#prompt-form"))
                page.select_option("#model", WORLD)
                prompt_shown.append(page.is_visible("#prompt-form"))
                assert prompt_shown == [False, True, False]

                # WebRTC blocked: the page falls back to the WebSocket and streams on the canvas.
                blocked = open_page(browser, server.url, BLOCK_WEBRTC)
                blocked.select_option("#model", "tiny")
                blocked.click("#connect")
                blocked.wait_for_function("window.streamgen.connected && window.streamgen.framesDecoded > 10",
                                          timeout=30_000)
                kind = blocked.evaluate("window.streamgen.transport.kind")
                shown = blocked.evaluate("[document.getElementById('canvas').hidden, document.getElementById('video').hidden]")
                notice = blocked.text_content("#error")
                frame = blocked.evaluate(CANVAS)
                blocked.click("#connect")  # disconnect
                assert kind == "ws" and shown == [False, True] and "WebSocket" in notice
                px = np.array(frame["px"], np.int16).reshape(frame["h"], frame["w"], 4)[..., :3]
                assert (frame["w"], frame["h"]) == (32, 32) and px.std() > 1.0  # tiny's picture, not a blank canvas
                assert wait_sessions(server, 0, 30) == 0  # the WS session stopped; the dead WebRTC offer reclaimed

                # WebRTC on the world; the model choice is locked while connected; a recording downloads.
                page.click("#connect")
                page.wait_for_function(PLAYING, timeout=30_000)
                locked = page.is_disabled("#model") and page.is_disabled("#transport")
                assert page.evaluate("window.streamgen.transport.kind") == "webrtc" and locked
                page.click("#record")
                page.wait_for_timeout(2500)
                with page.expect_download(timeout=15_000) as download:
                    page.click("#record")
                saved = tmp_path / download.value.suggested_filename
                download.value.save_as(saved)
                with av.open(str(saved)) as container:
                    stream = container.streams.video[0]
                    frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
                spec = server.state.specs[WORLD]
                assert saved.suffix == ".webm" and len(frames) >= 10
                assert frames[-1].shape == (spec.height, spec.width, 3) and frames[-1].std() > 1.0

                # The server stops: the page says why and offers Reconnect.
                server.__exit__(None, None, None)
                page.wait_for_function("window.streamgen.endReason !== null", timeout=20_000)
                status = page.text_content("#st-status")
                assert status in ("ended: shutdown", "server lost"), status
                assert page.is_visible("#reconnect") and not page.is_disabled("#model")

                # A server on the same port again: Reconnect streams.
                second = RunningServer(port=server.settings.port, **models).__enter__()
                page.click("#reconnect")
                page.wait_for_function("window.streamgen.connected && window.streamgen.framesDecoded > 10",
                                       timeout=30_000)
                assert page.text_content("#st-status") == "streaming" and not page.is_visible("#reconnect")
                assert len(second.state.manager.sessions) == 1
                page.click("#connect")
                assert wait_sessions(second, 0) == 0
            finally:
                browser.close()
    finally:
        server.__exit__(None, None, None)
        if second is not None:
            second.__exit__(None, None, None)
