"""The page streams the server's default model, the shipped `world`, and its arrow keys reach the session."""
from __future__ import annotations


import numpy as np
import pytest

from streamgen.pipeline import shipped_models
from streamgen.server.settings import ServerSettings

pytest.importorskip("playwright")

from .conftest import running_server  # noqa: E402
from .test_browser import GRAB, connected_page, page_state  # noqa: E402

pytestmark = pytest.mark.skipif("world" not in shipped_models(), reason="streamgen/weights/world is not shipped")


@pytest.mark.browser
def test_page_streams_the_default_world_and_arrow_keys_reach_it():
    default = ServerSettings().model
    assert default == "world"
    with running_server(model=default) as server, connected_page(server, 20_000) as page:
        first = page.evaluate(GRAB)
        page.keyboard.down("ArrowUp")
        page.wait_for_timeout(800)
        page.keyboard.up("ArrowUp")
        page.keyboard.down("ArrowDown")
        page.wait_for_timeout(800)
        page.keyboard.up("ArrowDown")
        page.wait_for_timeout(600)
        state, received = page_state(page, server)
        page.click("#connect")
    assert (first["w"], first["h"]) == (64, 64)
    px = np.array(first["px"], np.int16).reshape(64, 64, 4)[..., :3]
    # A Pong screen from the first second: the brown playfield (144, 72, 17) dominates.
    assert np.abs(px.reshape(-1, 3).mean(axis=0) - np.array([144, 72, 17])).max() < 30
    assert received == [("ArrowUp", True), ("ArrowUp", False), ("ArrowDown", True), ("ArrowDown", False)]
    assert state["sent"] == 4 and state["decoded"] > 10 and state["samples"] > 48000
