"""The client's control path against the real server: actions applied in order, typed errors for
bad input, ping / pong, prompt, pause / resume, and the busy answer on both transports."""
from __future__ import annotations

import asyncio
import time

import pytest

from streamgen_client import BusyError, connect

from .conftest import MAX_SESSIONS, MODEL, WORLD


async def _until(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _drain_frames(client, quiet_s: float) -> list:
    """Take frames until none arrives for ``quiet_s``."""
    got = []
    while True:
        try:
            f = await client.next_frame(quiet_s)
        except asyncio.TimeoutError:
            return got
        if f is None:
            return got
        got.append(f)


def test_control_round_trip_over_ws(server):
    async def main():
        c = await connect(server, transport="ws", model=WORLD, seed=0, timeout=60)
        try:
            assert c.info.keys and c.info.takes_mouse and c.info.takes_prompt
            first = await c.next_frame(30)
            assert first.image.shape == (c.info.height, c.info.width, 3)
            assert first.block_index is not None

            await c.ping()
            await _until(lambda: c.rtt_ms is not None, 5, "pong")
            assert 0 <= c.rtt_ms < 5000

            seqs = [await c.send_action(c.info.keys[0], True), await c.send_mouse(3, -2),
                    await c.send_action(c.info.keys[0], False)]
            assert seqs == sorted(seqs) and len(set(seqs)) == 3
            applied = []
            async for t in c.telemetry():
                if t.applied_seq is not None:
                    applied.append(t.applied_seq)
                if applied and applied[-1] >= seqs[-1]:
                    break
            assert applied and applied[-1] >= seqs[-1], f"the session never applied seq {seqs[-1]}: {applied}"
            assert applied == sorted(applied), f"actions applied out of order: {applied}"

            bad = await c.send_action("NotAKey", True)
            await _until(lambda: any(e.reply_to == bad for e in c.errors), 5, "the error for an unknown key")
            err = next(e for e in c.errors if e.reply_to == bad)
            assert err.code == "out_of_range" and "NotAKey" in err.message

            await c.set_prompt("a small red square")
            await c.pause()
            await asyncio.sleep(0.5)
            await _drain_frames(c, 1.0)  # what was already generated before the pause
            block = c.last_telemetry.block_index
            assert await _drain_frames(c, 1.0) == [], "frames kept coming while paused"
            await c.resume()
            after = await c.next_frame(30)
            assert after.timestamp_us > first.timestamp_us
            await _until(lambda: c.last_telemetry.block_index > block, 30, "a block after resume")
            assert not [e for e in c.errors if e.reply_to != bad], c.errors
        finally:
            await c.close()
        assert c.bye is not None and c.bye.reason == "stop"

    asyncio.run(main())


def test_busy_answer_on_both_transports(server):
    pytest.importorskip("aiortc")

    async def main():
        held = [await connect(server, transport="ws", model=WORLD, timeout=60) for _ in range(MAX_SESSIONS)]
        try:
            for transport in ("ws", "webrtc"):
                with pytest.raises(BusyError) as e:
                    await connect(server, transport=transport, model=WORLD, timeout=30)
                assert e.value.code == "busy" and e.value.retry_after_s and e.value.retry_after_s > 0
            frame = await held[0].next_frame(30)  # the admitted sessions keep streaming
            assert frame is not None
        finally:
            for c in held:
                await c.close()

    asyncio.run(main())


def test_sync_client_over_ws(server):
    import threading

    from streamgen_client import SyncClient

    threads = threading.active_count()
    with SyncClient(server, transport="ws", model=WORLD, timeout=60) as c:
        assert c.info.name == WORLD and c.session_id
        stamps = []
        for frame in c.frames(timeout=30):
            assert frame.image.dtype.name == "uint8" and frame.image.shape[2] == 3
            stamps.append(frame.timestamp_us)
            if len(stamps) == 3:
                break
        assert stamps == sorted(set(stamps))
        assert c.send_action(c.info.keys[0], True) < c.send_mouse(1, 1)
        chunk = c.next_audio(timeout=30)
        assert chunk.sample_rate == c.info.sample_rate and chunk.samples.shape[1] == c.info.channels
    assert c.client.closed
    deadline = time.monotonic() + 5
    while threading.active_count() > threads and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= threads, [t.name for t in threading.enumerate()]


def test_connect_without_a_model_streams_the_servers_default(server):
    from streamgen_client.api import default_model

    assert default_model(server) == MODEL  # what the test server was started with

    async def go():
        client = await connect(server, transport="ws", seed=0)
        try:
            assert client.info.name == MODEL
            assert (await client.next_frame(20)) is not None
        finally:
            await client.close()

    asyncio.run(go())
