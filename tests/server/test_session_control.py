"""Pause / resume / prompt at block boundaries, and idle sessions reclaimed with bye 'idle'."""
from __future__ import annotations

import asyncio
import time

from streamgen_client import protocol as P

from .conftest import running_server, unhandled
from .rtc_client import RtcClient
from .ws_client import WsClient


def test_pause_resume_prompt_and_idle_reclaim():
    with running_server(idle_timeout_s=1.5, heartbeat_interval_s=0.5) as server:
        async def run():
            async with WsClient(server.url) as c:
                started = await c.start("tiny")
                sid = started["session_id"]
                es = server.state.manager.sessions[sid].es
                await c.wait_for(lambda: len(c.media) >= 4, what="frames")
                await c.send(P.Pause(seq=next(c.seq)))
                await asyncio.sleep(0.6)  # let what was generated before the pause drain
                paused_blocks, paused_frames = es.blocks, len(c.media)
                await asyncio.sleep(0.8)
                still = (es.blocks - paused_blocks, len(c.media) - paused_frames)
                await c.send(P.Prompt(seq=next(c.seq), prompt="a red kite"))
                await c.send(P.Resume(seq=next(c.seq)))
                await c.wait_for(lambda: len(c.media) >= paused_frames + 4, what="frames after resume")
                prompt_now = es.session.prompt if es.session is not None else None
                ts = [h.timestamp_us for h, _ in c.media]
                # Now go quiet: no ping, nothing. The server reclaims the session.
                code = await c.wait_closed(timeout=6)
                return still, prompt_now, ts, code, c.of_type("bye"), sid
        still, prompt_now, ts, code, bye, sid = asyncio.run(run())
        assert still == (0, 0)  # paused: no blocks generated, no frames sent
        assert prompt_now == "a red kite"  # applied at the block boundary after resume
        assert all(b > a for a, b in zip(ts, ts[1:]))  # media time continues across the pause
        assert code == 1000 and bye and bye[-1]["reason"] == "idle"
        assert sid not in server.state.manager.sessions
        for _ in range(100):  # the engine thread frees it at its next turn
            if server.state.engine.session_count() == 0:
                break
            time.sleep(0.02)
        assert server.state.engine.session_count() == 0


def test_a_failing_session_is_closed_and_the_others_keep_streaming(server):
    async def run():
        async with WsClient(server.url) as bad, WsClient(server.url) as good:
            sid = (await bad.start("tiny"))["session_id"]
            await good.start("tiny")
            await good.wait_for(lambda: len(good.media) >= 2, what="frames")
            es = server.state.manager.sessions[sid].es
            # Break the model session under the engine (on its own thread): the next step() raises.
            await asyncio.wrap_future(server.state.engine.submit(es.session.close))
            code = await bad.wait_closed()
            n = len(good.media)
            await good.wait_for(lambda: len(good.media) >= n + 6, what="frames after the failure")
            return code, bad.errors(), bad.of_type("bye")
    code, errors, bye = asyncio.run(run())
    assert code == 1011 and errors == ["internal"] and bye[-1]["reason"] == "error"
    assert server.state.engine.alive


def test_server_shutdown_ends_each_session_with_its_bye():
    """uvicorn closes WebSockets with 1012 before the app's lifespan ends; the server says bye first."""
    with running_server(max_sessions=2) as server:
        async def run():
            rtc = await RtcClient(server.url).connect()
            await rtc.wait_for(lambda: len(rtc.video) >= 2, what="webrtc frames")
            async with WsClient(server.url) as ws:
                await ws.start("tiny")
                await ws.wait_for(lambda: len(ws.media) >= 2, what="ws frames")
                server.server.should_exit = True  # what Ctrl-C does
                code = await ws.wait_closed(timeout=15)
                await rtc.wait_for(lambda: rtc.of_type("bye"), timeout=15, what="webrtc bye")
                await rtc.close()
                return code, ws.of_type("bye"), rtc.of_type("bye")
        code, ws_bye, rtc_bye = asyncio.run(run())
        log = server.log.getvalue()
    assert code == 1001 and [b["reason"] for b in ws_bye] == ["shutdown"]
    assert [b["reason"] for b in rtc_bye] == ["shutdown"]
    assert not unhandled(log), unhandled(log)[:10]
