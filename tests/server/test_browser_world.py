"""The page streams the server's default model, the shipped `world`, and its arrow keys reach the session."""
from __future__ import annotations

import time

import numpy as np
import pytest

from streamgen.pipeline import shipped_models
from streamgen.server.settings import ServerSettings

pytest.importorskip("playwright")
from playwright.sync_api import sync_playwright  # noqa: E402

from .test_browser import CHROMIUM_ARGS, GRAB  # noqa: E402

pytestmark = pytest.mark.skipif("world" not in shipped_models(), reason="streamgen/weights/world is not shipped")


@pytest.mark.browser
def test_page_streams_the_default_world_and_arrow_keys_reach_it():
    from .conftest import running_server

    default = ServerSettings().model
    assert default == "world"
    with running_server(model=default) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(server.url + "/")
            page.wait_for_function("window.streamgen.models.length > 0", timeout=10_000)
            page.click("#connect")
            page.wait_for_function("(() => { const v = document.getElementById('video');"
                                   " return v.videoWidth > 0 && v.currentTime > 0.5; })()", timeout=20_000)
            first = page.evaluate(GRAB)
            page.keyboard.down("ArrowUp")
            page.wait_for_timeout(800)
            page.keyboard.up("ArrowUp")
            page.keyboard.down("ArrowDown")
            page.wait_for_timeout(800)
            page.keyboard.up("ArrowDown")
            page.wait_for_timeout(600)
            state = page.evaluate("({sid: window.streamgen.sessionId, sent: window.streamgen.keysSent,"
                                  " decoded: window.streamgen.framesDecoded, energy: window.streamgen.audioEnergy,"
                                  " samples: window.streamgen.audioSamples})")
            session = server.state.manager.sessions[state["sid"]]
            received = [(a["key"], a["down"]) for a in list(session.es.action_log) if a["kind"] == "key"]
            page.click("#connect")
        finally:
            browser.close()
    assert (first["w"], first["h"]) == (64, 64)
    px = np.array(first["px"], np.int16).reshape(64, 64, 4)[..., :3]
    # A Pong screen from the first second: the brown playfield (144, 72, 17) dominates.
    assert np.abs(px.reshape(-1, 3).mean(axis=0) - np.array([144, 72, 17])).max() < 30
    assert received == [("ArrowUp", True), ("ArrowUp", False), ("ArrowDown", True), ("ArrowDown", False)]
    assert state["sent"] == 4 and state["decoded"] > 10 and state["samples"] > 48000
