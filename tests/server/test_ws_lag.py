"""Defect 12, the WebSocket half: a stream that falls behind real time says so in its telemetry
(``behind_ms``), so a client can tell slow motion from a live stream; a pause is not counted as lag."""
from __future__ import annotations

import asyncio
import time

import pytest

from streamgen.server.lag import StreamLag
from tests.server.conftest import running_server, unhandled
from tests.server.ws_client import WsClient


def test_lag_is_wall_time_minus_media_time_and_a_pause_is_not_lag():
    lag = StreamLag(fps=10.0)
    assert lag.block(100.0, 5) == 0.0  # the first block starts the clock
    assert lag.block(100.5, 5) == pytest.approx(0.0)  # 5 frames at 10 fps: exactly on time
    assert lag.block(101.0, 5) == pytest.approx(0.0)
    assert lag.block(103.5, 5) == pytest.approx(2.0)  # due at 101.5, came at 103.5
    lag.reanchor()  # resumed after a pause
    assert lag.block(200.0, 5) == 0.0
    assert lag.block(200.1, 5) == 0.0  # ahead of time is not negative lag
    with pytest.raises(ValueError, match="fps must be > 0, got 0"):
        StreamLag(fps=0)


def test_a_stalled_websocket_stream_reports_how_far_behind_it_is():
    stall_s = 3.0
    with running_server(max_sessions=2) as srv:
        async def run():
            async with WsClient(srv.url) as c:
                assert (await c.start("tiny"))["type"] == "started"
                await c.wait_for(lambda: len(c.of_type("telemetry")) >= 1, timeout=30, what="telemetry")
                before = len(c.of_type("telemetry"))
                # The engine thread is busy elsewhere for stall_s: the stream cannot keep real time.
                srv.state.engine.submit(lambda: time.sleep(stall_s)).result(timeout=30)
                await c.wait_for(lambda: len(c.of_type("telemetry")) >= before + 2, timeout=30, what="telemetry")
                after = [t["behind_ms"] for t in c.of_type("telemetry")[before:]]
                assert max(after) >= 0.6 * stall_s * 1000, after

                await c.send({"type": "pause", "seq": 100})
                await asyncio.sleep(stall_s)
                paused_upto = len(c.of_type("telemetry"))
                await c.send({"type": "resume", "seq": 101})
                await c.wait_for(lambda: len(c.of_type("telemetry")) >= paused_upto + 2, timeout=30,
                                 what="telemetry after resume")
                resumed = [t["behind_ms"] for t in c.of_type("telemetry")[paused_upto:]]
                assert min(resumed) < 0.5 * stall_s * 1000, resumed  # the pause itself is not lag
                assert not c.errors()
        asyncio.run(run())
        assert not unhandled(srv.log.getvalue())
