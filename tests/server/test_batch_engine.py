"""The engine steps each model's due sessions in one batched step (streamgen.batch_step), keeps each
session's own input, output and failure, and real WebSocket sessions of one model get batched."""
from __future__ import annotations

import asyncio
import time

import numpy as np

import streamgen
from streamgen.server.buffer import OutputBuffer
from streamgen.server.engine import Engine, EngineSession

from .conftest import running_server
from .ws_client import WsClient


def _open(engine, pipe, loop, n: int) -> list[EngineSession]:
    """``n`` paused sessions of ``pipe`` with real output buffers, each recording its BlockInfos."""
    sessions = []
    for i in range(n):
        buf = OutputBuffer(loop, fps=pipe.fps, frames_per_block=pipe.frames_per_chunk, max_age_s=10.0,
                           ahead_blocks=2, webrtc=False, on_consumed=engine.wake)
        infos: list = []
        es = EngineSession(id=f"s{i}", model="tiny", seed=i, prompt=None, buffer=buf, paused=True,
                           on_block=infos.append)
        es.infos = infos
        sessions.append(es)
    return sessions


def _run_engine(max_batch, setup, ride_along: bool = True, blocks=(2, 2, 2)) -> tuple[Engine, list[EngineSession]]:
    """Three sessions of tiny stepped until session i made ``blocks[i]`` blocks (or failed)."""
    pipe = streamgen.load_pipeline("tiny", device="cpu")
    batches: list = []
    engine = Engine({"tiny": pipe}, device="cpu", max_batch=max_batch, on_batch=lambda *a: batches.append(a),
                    ride_along=ride_along)
    engine.start()

    async def run():
        loop = asyncio.get_running_loop()
        sessions = _open(engine, pipe, loop, 3)
        for es in sessions:
            await asyncio.wrap_future(engine.open(es))
        await asyncio.wrap_future(engine.submit(lambda: setup(sessions)))  # between rounds, on the engine thread
        for es in sessions:
            es.paused = False
        engine.wake()
        deadline = time.monotonic() + 10
        while any(es.blocks < n and es.failed is None for es, n in zip(sessions, blocks)) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return sessions

    try:
        sessions = asyncio.run(run())
    finally:
        engine.stop()
    engine.batch_log = batches
    return engine, sessions


def test_due_sessions_step_in_one_batch_with_their_own_input():
    def setup(sessions):
        sessions[1].add_action({"kind": "key", "key": "KeyW", "down": True, "t_ms": 1.0}, seq=4)
        sessions[2].set_prompt("a red ball")

    engine, (s0, s1, s2) = _run_engine(None, setup)
    assert engine.batches[3] >= 1  # all three were due in the same round: one step
    assert all(es.blocks == 2 and es.failed is None for es in (s0, s1, s2))
    first = [es.infos[0] for es in (s0, s1, s2)]
    assert [i.batch_size for i in first] == [3, 3, 3] and [i.block_index for i in first] == [0, 0, 0]
    assert first[1].applied_seq == 4 and list(s1.action_log)[0]["key"] == "KeyW" and not s0.action_log
    assert s2.session is None  # closed at stop
    assert ("tiny", 3) == engine.batch_log[0][:2] and engine.batch_log[0][2] > 0
    # Each step tells admission how many of its sessions made their first block (joining steps are not
    # counted as steady ones, server/capacity.py): all three in the first step, none afterwards.
    assert engine.batch_log[0][3] == 3 and all(b[3] == 0 for b in engine.batch_log[1:])


def test_max_batch_splits_a_round():
    engine, sessions = _run_engine(2, lambda sessions: None)
    assert engine.batches[2] >= 1 and engine.batches[1] >= 1 and not engine.batches[3]
    assert all(es.blocks == 2 for es in sessions)


def test_a_failing_session_fails_alone_when_its_batch_fails():
    def setup(sessions):
        sessions[1].session.text_kv = []  # a session whose state breaks the batched forward

    engine, (s0, s1, s2) = _run_engine(None, setup)
    assert isinstance(s1.failed, IndexError) and s1.blocks == 0
    assert s0.failed is None and s2.failed is None and s0.blocks == 2 and s2.blocks == 2
    assert engine.batches[1] >= 2  # the failed batch's others were stepped one by one


def test_websocket_sessions_of_one_model_are_batched():
    with running_server(max_sessions=3, ahead_blocks=3) as server:
        async def run():
            clients = [WsClient(server.url) for _ in range(3)]
            for c in clients:
                await c.__aenter__()
            try:
                started = await asyncio.gather(*(c.start("tiny") for c in clients))
                for c in clients:
                    await c.wait_for(lambda c=c: len(c.media) >= 12, timeout=20, what="frames")
                return started, [len(c.media) for c in clients]
            finally:
                for c in clients:
                    await c.__aexit__(None, None, None)

        started, frames = asyncio.run(run())
        batches = dict(server.state.engine.batches)
    assert [s["type"] for s in started] == ["started"] * 3
    assert all(n >= 12 for n in frames)
    assert any(k >= 2 for k in batches), batches  # sessions due together were stepped in one batched step


def _fill_one_block_ahead(es: EngineSession) -> None:
    """Queue the blocks of the session's ahead quota (2 here) in its buffer: it is not due."""
    pipe_frames = es.buffer.ahead_frames
    es.buffer.push_block(np.zeros((pipe_frames, 8, 8, 3), np.uint8), None, None, 0)
    assert not es.buffer.wants_block()


def test_a_session_with_room_for_a_block_rides_along_with_the_due_ones():
    """Issue 18: sessions out of phase fragmented the batches; one whose buffer is full to its quota but
    has room for one more block joins its model's due sessions (ride_along), and does not without it."""
    def setup(sessions):
        _fill_one_block_ahead(sessions[0])

    engine, (s0, s1, s2) = _run_engine(None, setup, blocks=(1, 2, 2))
    first = [es.infos[0] for es in (s0, s1, s2)]
    assert [i.batch_size for i in first] == [3, 3, 3]  # s0 rode along in the first step
    assert s0.buffer.queued() == s0.buffer.ahead_frames + first[0].frames  # one block past its quota, no more
    assert s0.blocks == 1 and s1.blocks == 2 and s2.blocks == 2

    engine, (s0, s1, s2) = _run_engine(None, setup, ride_along=False, blocks=(0, 2, 2))
    assert s0.blocks == 0 and engine.batches[2] >= 1 and not engine.batches[3]
