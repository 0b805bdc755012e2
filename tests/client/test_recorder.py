"""The mp4 recorder writes H.264/MPEG-4 + AAC that PyAV reads back with matching durations."""
import numpy as np
import pytest

from streamgen_client.media import AudioChunk, VideoFrame
from streamgen_client.recorder import Mp4Recorder, probe

FPS, SR = 8.0, 16000


def _stream(rec, seconds, channels, audio_offset_us=0, gap_block=None):
    n = int(seconds * FPS)
    per_block = 4
    for b in range(n // per_block):
        for i in range(per_block):
            k = b * per_block + i
            img = np.zeros((48, 64, 3), np.uint8)  # [H, W, 3]
            img[:, : (k % 64) + 1] = (255, 64, 0)  # a bar that grows frame by frame
            rec.add_video(VideoFrame(image=img, timestamp_us=round(k * 1e6 / FPS), block_index=b, frame_index=i))
        if b == gap_block:
            continue  # a lost audio block becomes silence
        s0 = round(b * per_block / FPS * SR)
        s = int(per_block / FPS * SR)
        t = (np.arange(s0, s0 + s) / SR)[:, None]
        tone = (0.5 * np.sin(2 * np.pi * 440 * t)).repeat(channels, 1).astype(np.float32)  # [S, C]
        rec.add_audio(AudioChunk(samples=tone, sample_rate=SR, timestamp_us=round(s0 * 1e6 / SR) + audio_offset_us))


@pytest.mark.parametrize("channels", [1, 2])
def test_recorder_round_trip(tmp_path, channels):
    path = str(tmp_path / "out.mp4")
    rec = Mp4Recorder(path, fps=FPS, width=64, height=48, sample_rate=SR, channels=channels)
    _stream(rec, 3.0, channels)
    rec.close()
    info = probe(path)
    v, a = info["video"], info["audio"]
    assert v["codec"] in ("h264", "mpeg4") and a["codec"] == "aac"
    assert v["frames"] == 24 and (v["width"], v["height"]) == (64, 48)
    assert a["sample_rate"] == SR and a["channels"] == channels
    assert v["duration_s"] == pytest.approx(3.0, abs=1 / FPS)
    assert a["duration_s"] == pytest.approx(3.0, abs=0.1)  # AAC pads up to one 1024-sample frame
    assert 0.3 < a["peak"] < 0.7  # the tone survived encoding


def test_recorder_audio_gap_is_silence_and_frames_are_real(tmp_path):
    import av

    path = str(tmp_path / "gap.mp4")
    rec = Mp4Recorder(path, fps=FPS, width=65, height=49, sample_rate=SR, channels=1)  # odd: cropped
    _stream(rec, 2.0, 1, gap_block=1)
    assert not rec.add_video(VideoFrame(image=np.zeros((49, 65, 3), np.uint8), timestamp_us=0))  # not later
    rec.close()
    info = probe(path)
    assert (info["video"]["width"], info["video"]["height"]) == (64, 48)
    assert info["audio"]["duration_s"] == pytest.approx(2.0, abs=0.1)
    with av.open(path) as c:
        pcm = np.concatenate([f.to_ndarray()[0] for f in c.decode(audio=0)])
    with av.open(path) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    block = int(4 / FPS * SR)
    lead = 1024  # AAC priming delay may shift the decoded signal by up to one frame
    silent = np.abs(pcm[block + lead: 2 * block - lead]).max()
    loud = np.abs(pcm[lead: block - lead]).max()
    assert silent < 0.02 and loud > 0.3
    # the growing bar: frame k is red up to column k
    assert frames[10][24, 5, 0] > 200 and frames[10][24, 30, 0] < 40


def test_recorder_without_audio(tmp_path):
    path = str(tmp_path / "v.mp4")
    rec = Mp4Recorder(path, fps=FPS, width=64, height=48)
    _stream(rec, 1.0, 1)
    rec.close()
    info = probe(path)
    assert "audio" not in info and info["video"]["frames"] == 8


def test_cli_rejects_bad_arguments(capsys):
    from streamgen_client.cli import main

    with pytest.raises(SystemExit):
        main(["record", "http://127.0.0.1:9", "--seconds", "0"])
    assert main(["record", "ftp://example", "--seconds", "1"]) == 2
    assert "must be http(s)://" in capsys.readouterr().err
    assert main(["record", "http://127.0.0.1:9", "--transport", "webrtc", "--seconds", "1", "--timeout", "3"]) == 1
