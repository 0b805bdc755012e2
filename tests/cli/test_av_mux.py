"""``streamgen generate`` / ``bench`` on the joint audio-video preset, run as real subprocesses."""
import json

import av
import numpy as np

from .helpers import run_cli


def test_generate_muxes_audio_as_long_as_the_video(tmp_path):
    out = tmp_path / "av.mp4"
    proc = run_cli("generate", "--model", "tiny-av", "--blocks", "20", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    with av.open(str(out)) as container:
        v, a = container.streams.video[0], container.streams.audio[0]
        assert a.codec_context.sample_rate == 48000
        frames = sum(1 for _ in container.decode(v))
    with av.open(str(out)) as container:
        samples = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    video_s, audio_s = frames / 16.0, samples.size / 48000
    assert frames == 20 * 8  # tiny-av: 2 latent frames x 4 pixel frames per block at 16 fps
    assert abs(audio_s - video_s) < 0.5  # within one block (0.5 s)
    assert np.abs(samples).max() > 0.01  # not silence


def test_bench_reports_audio_realtime_factor():
    proc = run_cli("bench", "--model", "tiny-av", "--blocks", "6", "--warmup", "1", "--quiet")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["audio_realtime_factor"] > 0
