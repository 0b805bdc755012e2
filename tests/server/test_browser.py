"""Headless Debian Chromium opens the page, connects over WebRTC, plays frames and sends key edges."""
from __future__ import annotations

import contextlib
import os
import time

import numpy as np
import pytest

from streamgen.presets import PRESETS

pytest.importorskip("playwright")
from playwright.sync_api import sync_playwright  # noqa: E402

from .conftest import running_server  # noqa: E402

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--use-fake-ui-for-media-stream",
                 "--autoplay-policy=no-user-gesture-required"]
GRAB = """() => {
  const v = document.getElementById('video');
  const c = document.createElement('canvas'); c.width = v.videoWidth; c.height = v.videoHeight;
  const g = c.getContext('2d'); g.drawImage(v, 0, 0);
  return {w: c.width, h: c.height, t: v.currentTime, px: Array.from(g.getImageData(0, 0, c.width, c.height).data)};
}"""
# The action-conditioned preset (its frames depend on the keys, and it has sound) when it exists;
# STREAMGEN_TEST_MODEL picks another.
MODEL = os.environ.get("STREAMGEN_TEST_MODEL", "tiny-world" if "tiny-world" in PRESETS else "tiny")
STATE = ("({sid: window.streamgen.sessionId, sent: window.streamgen.keysSent, decoded: window.streamgen.framesDecoded,"
         " fps: window.streamgen.fps, energy: window.streamgen.audioEnergy, samples: window.streamgen.audioSamples})")


@contextlib.contextmanager
def connected_page(server, play_timeout_ms: int):
    """Chromium on the server's page, connected over WebRTC, with the video element playing."""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(server.url + "/")
            page.wait_for_function("window.streamgen.models.length > 0", timeout=10_000)
            page.click("#connect")
            page.wait_for_function("(() => { const v = document.getElementById('video');"
                                   " return v.videoWidth > 0 && v.currentTime > 0.5; })()", timeout=play_timeout_ms)
            yield page
        finally:
            browser.close()


def page_state(page, server) -> tuple[dict, list]:
    """The page's stats and the key edges the server-side session received, in order."""
    state = page.evaluate(STATE)
    session = server.state.manager.sessions[state["sid"]]
    return state, [(a["key"], a["down"]) for a in list(session.es.action_log) if a["kind"] == "key"]


@pytest.mark.browser
def test_page_streams_and_keys_reach_the_session():
    t0 = time.monotonic()
    with running_server(model=MODEL) as server, connected_page(server, 15_000) as page:
        before = page.evaluate(GRAB)
        keys = ["KeyW", "KeyD"]
        for k in keys:
            page.keyboard.down(k)
        page.wait_for_timeout(700)
        for k in keys:
            page.keyboard.up(k)
        page.wait_for_timeout(300)
        after = page.evaluate(GRAB)
        page.wait_for_timeout(600)  # one more stats poll
        state, received = page_state(page, server)
        page.click("#connect")  # disconnect: the session goes away
        deadline = time.monotonic() + 5
        while server.state.manager.sessions and time.monotonic() < deadline:
            time.sleep(0.05)
        left = len(server.state.manager.sessions)
    spec = server.state.specs[MODEL]
    assert before["w"] == spec.width and before["h"] == spec.height
    assert after["t"] > before["t"] + 0.5  # the video element kept playing
    a = np.array(before["px"], np.int16).reshape(spec.height, spec.width, 4)
    b = np.array(after["px"], np.int16).reshape(spec.height, spec.width, 4)
    assert np.abs(a - b)[..., :3].mean() > 1.0  # the picture changed after the key presses
    assert a[..., :3].std() > 1.0  # and it is a picture, not a blank frame
    assert state["sent"] == 4 and received == [("KeyW", True), ("KeyD", True), ("KeyW", False), ("KeyD", False)]
    assert state["decoded"] > 10
    assert state["samples"] > 48000  # the audio track plays (silence for silent models)
    if spec.sample_rate:
        assert state["energy"] > 0  # and carries the model's sound
    assert left == 0
    assert time.monotonic() - t0 < 30
