"""End to end: the real server (a subprocess on a loopback port) and the Python client record 5 s of
audio + video over each transport; the mp4 is decoded again and both streams are checked."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request

import av
import numpy as np
import pytest

from .conftest import MODEL

SECONDS = 5.0


def _model_info(url: str) -> dict:
    with urllib.request.urlopen(url + "/v1/models", timeout=5) as r:
        models = json.loads(r.read())["models"]
    return next(m for m in models if m["name"] == MODEL)


def _read_back(path: str) -> tuple[list[np.ndarray], list[float], np.ndarray, int, int]:
    """Decode the file independently of the client's own probe."""
    with av.open(path) as c:
        frames, times = [], []
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="rgb24"))  # [H, W, 3]
            times.append(float(f.pts * f.time_base))
    with av.open(path) as c:
        rate, channels = c.streams.audio[0].sample_rate, c.streams.audio[0].channels
        pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])  # all channels, flat
    return frames, times, pcm, rate, channels


def _check(path: str, fps: float, audio_rate: int) -> None:
    frames, times, pcm, rate, channels = _read_back(path)
    # The server may drop stale frames on a loaded CPU, but media time stays on the clock.
    assert len(frames) >= 0.25 * SECONDS * fps, f"only {len(frames)} frames in {SECONDS} s at {fps} fps"
    assert all(b > a for a, b in zip(times, times[1:])), "video timestamps are not strictly increasing"
    assert SECONDS - 0.5 <= times[-1] + 1 / fps <= SECONDS + 0.5, times[-1]
    stack = np.stack(frames).astype(np.float32)  # [T, H, W, 3]
    assert stack.std(axis=0).mean() > 1.0, "the video does not change over time"
    assert rate == audio_rate
    audio_s = pcm.size / channels / rate
    assert abs(audio_s - SECONDS) <= 0.3, f"audio is {audio_s:.2f} s, video {SECONDS} s"


def test_record_ws_with_the_cli(server, tmp_path):
    info = _model_info(server)
    assert info["sample_rate"], f"{MODEL} makes no audio: {info}"
    out = tmp_path / "ws.mp4"
    exe = shutil.which("streamgen-client")
    cmd = [exe] if exe else [sys.executable, "-m", "streamgen_client.cli"]
    res = subprocess.run(cmd + ["record", server, "--transport", "ws", "--model", MODEL, "--seconds", str(SECONDS),
                                "-o", str(out)], capture_output=True, text=True, timeout=90)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout)
    assert report["video"]["codec"] in ("h264", "mpeg4") and report["audio"]["codec"] == "aac"
    assert (report["video"]["width"], report["video"]["height"]) == (info["width"] - info["width"] % 2,
                                                                    info["height"] - info["height"] % 2)
    assert report["audio"]["peak"] > 0.0, "the model's audio is silent"
    _check(str(out), info["fps"], info["sample_rate"])


def test_record_webrtc_with_the_sync_client(server, tmp_path):
    pytest.importorskip("aiortc")
    from streamgen_client import SyncClient

    info = _model_info(server)
    out = tmp_path / "webrtc.mp4"
    with SyncClient(server, transport="webrtc", model=MODEL, seed=1, timeout=60) as c:
        assert c.info.name == MODEL and c.session_id
        if c.info.keys:
            c.send_action(c.info.keys[0], True)
        report = c.record(str(out), SECONDS)
        assert not [e for e in c.client.errors if e.code != "out_of_range"], c.client.errors
    assert report["audio"]["sample_rate"] == 48000  # the WebRTC audio track's rate
    _check(str(out), info["fps"], 48000)
