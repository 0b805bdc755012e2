"""An aiortc client streams from the real server over loopback: video, audio, actions, telemetry."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from streamgen.presets import PRESETS

from .conftest import running_server
from .rtc_client import RtcClient

# tiny: silent (the server sends silence); tiny-world: action-conditioned, with audio.
MODELS = ["tiny"] + (["tiny-world"] if "tiny-world" in PRESETS else [])


@pytest.mark.parametrize("model", MODELS)
def test_stream_video_audio_and_actions_in_order(model):
    with running_server(model=model) as server:
        _stream(server, model)


def _stream(server, model):
    async def run():
        c = await RtcClient(server.url, model=model).connect()
        await c.wait_for(c.opened.is_set, what="control channel")
        await c.wait_for(lambda: c.of_type("started"), what="started")
        started = c.of_type("started")[0]
        fps = started["model"]["fps"]
        sent = []
        # Key edges while streaming: press and release a few keys, interleaved with a ping.
        for key in ["KeyW", "KeyA", "KeyW", "KeyS", "KeyD"]:
            sent.append((key, True, c.key(key, True)))
            sent.append((key, False, c.key(key, False)))
            await asyncio.sleep(0.3)
        await c.wait_for(lambda: len(c.video) >= 52, timeout=60 / fps * 10, what="52 video frames")
        c.send({"type": "ping", "seq": next(c.seq), "t_ms": 1.0})
        await c.wait_for(lambda: c.of_type("pong"), what="pong")
        session = server.state.manager.sessions[c.session_id]
        log = list(session.es.action_log)
        await c.close()
        return c, fps, sent, log, started

    c, fps, sent, log, started = asyncio.run(run())
    assert started["model"]["name"] == model and started["reply_to"] is None
    # >= 50 video frames with strictly increasing RTP timestamps, about one frame period apart.
    pts = np.array([p for p, _ in c.video], dtype=np.int64)
    assert len(pts) >= 50 and np.all(np.diff(pts) > 0)
    step = np.median(np.diff(pts))
    assert abs(step - 90000 / fps) < 90000 / fps * 0.1, step
    # The matching audio: 48 kHz frames with increasing timestamps covering the video's duration.
    apts = np.array([p for p, _, _ in c.audio], dtype=np.int64)
    assert np.all(np.diff(apts) > 0) and {sr for _, _, sr in c.audio} == {48000}
    video_s = (c.video[-1][1] - c.video[0][1])
    audio_s = sum(n for _, n, _ in c.audio) / 48000
    assert audio_s > video_s * 0.9, (audio_s, video_s)
    loud = sum(p > 100 for p in c.audio_peak)
    if started["model"]["sample_rate"]:
        assert loud > len(c.audio_peak) * 0.5  # the model's sound, not silence
    else:
        assert loud == 0  # silence keeps the audio track alive for silent models
    # The session received every key edge, in the order sent.
    got = [(a["key"], a["down"]) for a in log if a["kind"] == "key"]
    assert got == [(k, d) for k, d, _ in sent]
    # Telemetry per block, with the last applied action seq.
    tel = c.of_type("telemetry")
    assert len(tel) >= 50 // started["model"]["frames_per_block"] and all(t["frames"] == started["model"]["frames_per_block"] for t in tel)
    assert [t["block_index"] for t in tel] == sorted(t["block_index"] for t in tel)
    assert max(t["applied_seq"] or 0 for t in tel) == sent[-1][2]
    assert c.t_first_frame - c.t_offer < 5.0
