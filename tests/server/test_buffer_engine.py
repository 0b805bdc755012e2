"""The output buffer (stale drops, bounds, 48 kHz audio) and the engine thread (round-robin, latest-wins)."""
from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

import streamgen
from streamgen.server.buffer import BufferClosed, OutputBuffer
from streamgen.server.engine import Engine, EngineSession


def _video(n: int, value: int = 0) -> np.ndarray:
    return np.full((n, 8, 8, 3), value, np.uint8)  # [T, H, W, 3]


def test_stale_frames_are_dropped_and_the_buffer_is_bounded():
    async def run():
        buf = OutputBuffer(asyncio.get_running_loop(), fps=10.0, frames_per_block=4, max_age_s=0.3)
        assert buf.wants_block()
        old = time.monotonic() - 1.0
        buf.push_block(_video(4, 1), None, None, block_index=0, ready_t=old)  # waited too long already
        buf.push_block(_video(4, 2), None, None, block_index=1)
        assert not buf.wants_block()
        first = await buf.next_video()  # the 4 stale frames are skipped: the stream stays live
        assert (first.block_index, first.index_in_block, first.frame_no) == (1, 0, 4) and buf.dropped == 4
        for b in range(2, 40):  # nobody consumes: the buffer never grows past its capacity
            buf.push_block(_video(4, b), None, None, block_index=b)
        assert buf.queued() <= buf.capacity and buf.dropped > 100
        buf.close()
        with pytest.raises(BufferClosed):
            await buf.next_video()
    asyncio.run(run())


def test_audio_is_resampled_to_48k_and_padded():
    async def run():
        buf = OutputBuffer(asyncio.get_running_loop(), fps=10.0, frames_per_block=2, max_age_s=1.0)
        assert buf.take_pcm(960) is None  # no audio yet: the track sends silence
        t = np.arange(3200) / 16000.0
        tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[:, None]  # [S, 1] at 16 kHz
        buf.push_block(_video(2), tone, 16000, block_index=0)
        got = []
        while (pcm := buf.take_pcm(960)) is not None:
            got.append(pcm)
        pcm = np.concatenate(got)  # [n, 2] s16 stereo
        assert pcm.dtype == np.int16 and pcm.shape[1] == 2
        assert abs(len(pcm) - 9600) <= 960  # 0.2 s at 48 kHz (one frame of resampler delay / padding)
        assert np.abs(pcm[2000:8000]).max() > 10000 and np.array_equal(pcm[:, 0], pcm[:, 1])
    asyncio.run(run())


def test_engine_round_robin_and_latest_wins_prompt():
    pipe = streamgen.load_pipeline("tiny", device="cpu")
    engine = Engine({"tiny": pipe}, device="cpu")
    engine.start()

    async def run():
        loop = asyncio.get_running_loop()
        sessions = []
        for i in range(3):
            buf = OutputBuffer(loop, fps=pipe.fps, frames_per_block=pipe.frames_per_chunk, max_age_s=10.0,
                               ahead_blocks=3, webrtc=False, on_consumed=engine.wake)
            es = EngineSession(id=f"s{i}", model="tiny", seed=i, prompt=None, buffer=buf, paused=i < 2)
            await asyncio.wrap_future(engine.open(es))
            sessions.append(es)
        sessions[1].set_prompt("first")
        sessions[1].set_prompt("second")  # both arrive before its next block: only the last is applied
        sessions[1].paused = False
        engine.wake()
        sessions[2].add_action({"kind": "key", "key": "KeyW", "down": True, "t_ms": 1.0}, seq=7)
        await asyncio.sleep(0.5)
        return sessions

    try:
        s0, s1, s2 = asyncio.run(run())
        assert s0.blocks == 0  # paused: not stepped
        # each filled to its ahead target, then waited (at most one block past it, riding along with the other)
        assert 3 <= s1.blocks <= 4 and 3 <= s2.blocks <= 4
        assert s1.session.prompt == "second"
        assert "second" in pipe._prompt_cache and "first" not in pipe._prompt_cache  # "first" never encoded
        assert list(s2.action_log) == [{"kind": "key", "key": "KeyW", "down": True, "t_ms": 1.0}]
        for es in (s0, s1, s2):
            engine.close(es)
        deadline = time.monotonic() + 5
        while engine.session_count() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.session_count() == 0 and s1.session is None  # model sessions freed on the engine
    finally:
        engine.stop()
    assert not engine.alive


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_frames_waiting_their_turn_are_never_stale_but_a_stalled_consumer_skips_ahead():
    # 8-frame blocks at 16 fps (0.5 s per block, like tiny-world): with the engine's gating a block's last
    # frame plays ~0.9 s after it was made. That is its turn, not staleness.
    async def run():
        clock = _Clock()
        buf = OutputBuffer(asyncio.get_running_loop(), fps=16.0, frames_per_block=8, max_age_s=0.5, clock=clock)
        block = 0
        played = []
        for step in range(16 * 20):  # 20 s of playback, one pop per frame period
            while buf.wants_block():  # what the engine does: generate while less than a block is queued
                buf.push_block(_video(8), None, None, block_index=block)
                block += 1
            if step == 100:
                clock.t += 2.0  # the consumer stalls for 2 s (a blocked socket, a slow encoder)
            played.append(buf._pop_video().frame_no)
            clock.t += 1 / 16
        return buf.dropped, played
    dropped, played = asyncio.run(run())
    stall = 100  # the pop of step 100 comes after the stall
    assert played[:stall] == list(range(stall))  # nothing dropped while the consumer kept pace
    assert dropped > 0 and played[stall] > played[stall - 1] + 1  # after the stall it skipped ahead
    assert all(b > a for a, b in zip(played, played[1:]))
