"""Where a recording's frames go, and recordings driven by a key script.

Over WebRTC the server stamps frames with its wall clock (server/pacing.py): when generation stalls or
pauses, media time moves on without frames, so N seconds of recording hold fewer than N * fps frames
although nothing was dropped (the 132 of 150 frames of issue 14). The recorder counts those frame
periods (``gap_frames``): written + gap_frames covers the recorded span exactly. Over WebSocket media
time continues after a pause, so there is no gap.
"""
from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys

import av
import pytest

from streamgen_client import KeyScript, connect
from streamgen_client.recorder import record

from .conftest import WORLD

# The pause is long against what can still be in flight when it takes effect (frames the server queued
# ahead, a block under way, the control message's trip): under load (CI beside a training run) 15 frame
# periods of a 1.5 s pause were still filled, leaving a gap of 9 where 12 were asked for.
SECONDS = 5.5
PAUSE_S = 3.0


async def record_with_a_pause(url: str, transport: str, path: str) -> tuple[dict, int, int]:
    client = await connect(url, transport=transport, model=WORLD, timeout=60)
    try:
        task = asyncio.create_task(record(client, path, SECONDS))
        await asyncio.sleep(1.0)
        await client.pause()
        await asyncio.sleep(PAUSE_S)
        await client.resume()
        report = await task
    finally:
        await client.close()
    dropped_server = client.last_telemetry.dropped_frames if client.last_telemetry else 0
    return report, client.dropped_frames, dropped_server


def decoded_frames(path: str) -> int:
    with av.open(path) as c:
        return sum(1 for _ in c.decode(video=0))


@pytest.mark.parametrize("transport", ["webrtc", "ws"])
def test_every_frame_period_of_a_recording_is_accounted_for(server, tmp_path, transport):
    if transport == "webrtc":
        pytest.importorskip("aiortc")
    path = str(tmp_path / f"{transport}.mp4")
    report, dropped_client, dropped_server = asyncio.run(record_with_a_pause(server, transport, path))
    frames, fps = report["frames"], report["video"]["fps"]
    assert decoded_frames(path) == frames["written"] == report["video"]["frames"]
    assert dropped_client == 0 and frames["not_later"] == 0
    assert abs(frames["written"] + frames["gap_frames"] - frames["span_frames"]) <= 2, frames
    if transport == "webrtc":
        # The pause (less the frames already queued when it took effect) is a gap in media time.
        assert frames["gap_frames"] >= 0.5 * (PAUSE_S - 1.0) * fps, frames
        assert frames["written"] < frames["span_frames"]
    else:
        assert frames["gap_frames"] <= dropped_server, frames  # only stale drops leave gaps over WebSocket


def test_key_script_parsing(tmp_path):
    script = KeyScript.parse("ArrowUp:0.5-2.0, Space:3")
    assert [(e.t_s, e.key, e.down) for e in script.edges] == [
        (0.5, "ArrowUp", True), (2.0, "ArrowUp", False), (3.0, "Space", True), (3.2, "Space", False)]
    path = tmp_path / "keys.json"
    path.write_text(json.dumps([{"key": "KeyW", "from": 0, "to": 1}, {"key": "KeyD", "at": 0.5}]))
    assert [(e.t_s, e.key, e.down) for e in KeyScript.parse(str(path)).edges] == [
        (0.0, "KeyW", True), (0.5, "KeyD", True), (0.7, "KeyD", False), (1.0, "KeyW", False)]
    for bad, named in [("ArrowUp:2-1", "ArrowUp:2-1"), ("ArrowUp", "KEY:START-END"), ("Arrow Up:1", "Arrow Up"),
                       ("KeyW:soon", "soon")]:
        with pytest.raises(ValueError, match=named):
            KeyScript.parse(bad)


def test_record_cli_plays_a_key_script(server, tmp_path):
    exe = shutil.which("streamgen-client")
    cmd = [exe] if exe else [sys.executable, "-m", "streamgen_client.cli"]
    out = tmp_path / "keys.mp4"
    res = subprocess.run(cmd + ["record", server, "--transport", "ws", "--model", WORLD, "--seconds", "2.5",
                                "--keys", "KeyW:0.2-1.0,KeyD:1.5", "-o", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout)
    assert report["key_edges_sent"] == 4 and report["frames"]["written"] > 0
    bad = subprocess.run(cmd + ["record", server, "--keys", "KeyW:2-1"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "KeyW:2-1" in bad.stderr
