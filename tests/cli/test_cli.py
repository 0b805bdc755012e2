"""The streamgen command, run as a real subprocess, and its outputs read back."""
import json

import av

from .helpers import run_cli


def test_generate_writes_a_playable_mp4(tmp_path):
    out = tmp_path / "out.mp4"
    proc = run_cli("generate", "--model", "tiny", "--blocks", "20", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "block" in proc.stderr  # progress bar went to stderr
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(frames) == 20 * 2  # tiny: 2 latent frames per block, 1 pixel frame each
    assert frames[0].shape == (32, 32, 3)
    assert any((a != b).any() for a, b in zip(frames, frames[1:]))  # the picture moves


def test_bench_prints_json():
    proc = run_cli("bench", "--model", "tiny", "--blocks", "12", "--quiet")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    for key in ("frames_per_second", "time_to_first_frame_s", "block_ms_p50", "block_ms_p95", "peak_memory_mb"):
        assert result[key] > 0, key
    assert result["model"] == "tiny" and result["device"] == "cpu"


def test_bench_sessions_reports_total_and_per_session_rates():
    proc = run_cli("bench", "--model", "tiny", "--blocks", "4", "--warmup", "1", "--sessions", "1", "2", "--quiet")
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert [r["sessions"] for r in results] == [1, 2]
    for r in results:  # each measured block of N batched sessions gives N blocks of frames
        assert r["frames_per_second"] > 0
        assert abs(r["frames_per_second_per_session"] * r["sessions"] - r["frames_per_second"]) < 1e-6


def test_info_lists_presets_and_backends():
    proc = run_cli("info")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert {"tiny", "wan2.1-1.3b", "wan2.1-14b"} <= set(info["presets"])
    assert "sdpa" in info["attention_backends"] and "cpu" in info["devices"]


def test_unknown_model_is_a_clear_error():
    proc = run_cli("bench", "--model", "no-such-model", "--blocks", "2")
    assert proc.returncode != 0
    assert "no-such-model" in proc.stderr and "preset" in proc.stderr


def test_bad_override_names_the_field():
    proc = run_cli("generate", "--model", "tiny", "--blocks", "1", "--set", "window_frames=5", "-o", "/dev/null")
    assert proc.returncode != 0
    assert "window_frames" in proc.stderr
