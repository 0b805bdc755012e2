"""The WebSocket transport: start, JPEG frames with the binary header, telemetry, actions, stop."""
from __future__ import annotations

import asyncio
import io

import numpy as np
from PIL import Image
from streamgen_client import protocol as P

from .ws_client import WsClient


def test_ws_session_streams_jpeg_and_takes_input(server):
    async def run():
        async with WsClient(server.url) as c:
            started = await c.start("tiny", seed=3, prompt="a lighthouse")
            assert started["type"] == "started", started
            await c.send(P.KeyAction(seq=next(c.seq), key="KeyW", down=True, t_ms=5.0))
            await c.send(P.Prompt(seq=next(c.seq), prompt="a forest"))
            await c.send(P.KeyAction(seq=next(c.seq), key="KeyW", down=False, t_ms=9.0))
            await c.wait_for(lambda: len(c.media) >= 12, timeout=10, what="12 frames")
            ping = next(c.seq)
            await c.send(P.Ping(seq=ping, t_ms=123.0))
            pong = await c.reply(ping)
            sid = started["session_id"]
            log = list(server.state.manager.sessions[sid].es.action_log)
            stop = next(c.seq)
            await c.send(P.Stop(seq=stop))
            code = await c.wait_closed()
            return c, started, pong, log, code

    c, started, pong, log, code = asyncio.run(run())
    model = started["model"]
    assert pong["type"] == "pong" and pong["t_ms"] == 123.0
    assert code == 1000 and c.of_type("bye")[-1]["reason"] == "stop"
    hdrs = [h for h, _ in c.media if h.kind == P.MediaKind.VIDEO_JPEG]
    ts = [h.timestamp_us for h in hdrs]
    assert len(hdrs) >= 12 and all(b > a for a, b in zip(ts, ts[1:]))
    # Media time: frame n at n / fps.
    assert ts[0] == 0 and ts[1] == round(1e6 / model["fps"])
    img = np.asarray(Image.open(io.BytesIO(c.media[0][1])))
    assert img.shape == (model["height"], model["width"], 3) and img.std() > 1.0
    assert [(a["key"], a["down"]) for a in log] == [("KeyW", True), ("KeyW", False)]
    tel = c.of_type("telemetry")
    assert tel and tel[-1]["applied_seq"] is not None and "step" in tel[-1]["timings_ms"]
    assert not server.state.manager.sessions
