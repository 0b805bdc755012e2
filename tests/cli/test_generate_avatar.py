"""``streamgen generate --model AVATAR --audio in.wav [--reference face.png] -o out.mp4`` (streamgen/cli/generate.py)
with the small avatar folder of the server tests (random weights, real safetensors): the mp4 holds as many
blocks as the speech lasts and that speech as its sound, from the first frame on; a reference image becomes
the session's identity; bad inputs are one line naming the value and exit code 2, before any model loads."""
from __future__ import annotations

import wave

import av
import numpy as np
import pytest
import torch
from PIL import Image

import streamgen
from streamgen.cli.generate import AvatarInputs, generate_avatar
from streamgen.cli.main import main

from tests.server.avatar_model import RATE, speech_like, write_avatar_folder

from .helpers import run_cli

SECONDS = 1.5  # 6 blocks of 0.25 s


def write_wav(path, sig: np.ndarray, rate: int = 44100, channels: int = 2) -> None:
    up = np.interp(np.arange(int(sig.size * rate / RATE)) * RATE / rate, np.arange(sig.size), sig)  # [S'] at rate
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes(np.repeat(np.round(up * 32767).astype("<i2")[:, None], channels, axis=1).tobytes())


def envelope(x: np.ndarray, rate: int, hop_s: float = 0.05) -> np.ndarray:
    hop = int(rate * hop_s)
    return np.abs(x[: x.size // hop * hop]).reshape(-1, hop).mean(1)  # [n * hop] -> [n, hop] -> [n]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_avatar_folder(tmp_path_factory.mktemp("models"))


def test_generate_writes_the_face_with_its_speech(folder, tmp_path):
    sig = speech_like(SECONDS, seed=4, step_s=0.25)
    write_wav(tmp_path / "in.wav", sig)
    Image.new("RGB", (48, 64), (30, 160, 90)).save(tmp_path / "face.png")
    out = tmp_path / "out.mp4"
    proc = run_cli("generate", "--model", str(folder), "--audio", str(tmp_path / "in.wav"), "--reference",
                   str(tmp_path / "face.png"), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "6 blocks, 24 frames" in proc.stderr
    with av.open(str(out)) as c:
        assert c.streams.audio[0].sample_rate == RATE and c.streams.audio[0].channels == 1
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with av.open(str(out)) as c:
        pcm = np.concatenate([f.to_ndarray().mean(0) for f in c.decode(audio=0)])  # [C, n] -> [n] per frame
    assert len(frames) == 24 and frames[0].shape == (32, 32, 3)
    # The sound track is the WAV (resampled to 16 kHz mono, through AAC), starting with the first frame.
    want, got = envelope(sig, RATE), envelope(pcm, RATE)
    n = min(want.size, got.size)
    assert n >= want.size - 1 and np.corrcoef(want[:n], got[:n])[0, 1] >= 0.95


def test_the_reference_becomes_the_identity(folder):
    """In process, the same function the command runs: with a reference the session's sink holds it (as the
    autoencoder encodes it) and the frames differ from the default identity's; the driving speech is written."""
    pipe = streamgen.load_pipeline(str(folder))
    face = np.zeros((64, 48, 3), np.uint8)
    face[:, :, 0] = 220
    sig = speech_like(0.5, seed=1)

    class Collect:  # what Mp4Recorder is handed
        def __init__(self):
            self.video, self.audio = [], []

        def write_video(self, v):
            self.video.append(v)

        def write_audio(self, a, rate):
            assert rate == RATE and a.shape[1] == 1
            self.audio.append(a[:, 0])

    runs = {}
    for name, reference in (("default", None), ("red", face)):
        session, sink = pipe.start(seed=0), Collect()
        assert generate_avatar(pipe, session, AvatarInputs(speech=sig, rate=RATE, reference=reference), None, sink) == 2
        runs[name] = (np.concatenate(sink.video), np.concatenate(sink.audio), torch.cat(session.sink_latents, 1))
    from streamgen.identity import reference_frames
    from streamgen.image_condition import fit_image

    want = pipe.decoder.encode(reference_frames(pipe.config, fit_image(face, 32, 32)))
    torch.testing.assert_close(runs["red"][2], want.to(runs["red"][2].dtype), rtol=0, atol=1e-5)
    assert not np.array_equal(runs["red"][0], runs["default"][0])
    np.testing.assert_allclose(runs["red"][1][: sig.size], sig, atol=1e-6)  # the speech that drove the blocks


def test_bad_avatar_inputs_are_one_line_and_exit_2(folder, tmp_path, capsys):
    write_wav(tmp_path / "ok.wav", speech_like(0.3))
    (tmp_path / "notes.wav").write_text("not a wav at all")
    (tmp_path / "face.png").write_bytes(b"\x89PNG but not really")
    out = str(tmp_path / "o.mp4")
    cases = [
        (["--model", str(folder), "--audio", str(tmp_path / "missing.wav")], "missing.wav: no such file"),
        (["--model", str(folder), "--audio", str(tmp_path / "notes.wav")], "notes.wav: not a PCM WAV"),
        (["--model", "tiny", "--audio", str(tmp_path / "ok.wav")], "--model tiny takes no speech"),
        (["--model", str(folder), "--audio", str(tmp_path / "ok.wav"), "--reference", str(tmp_path / "face.png")],
         "face.png: not an image"),
        (["--model", str(folder), "--reference", str(tmp_path / "nope.png")], "nope.png: no such file"),
    ]
    for argv, says in cases:
        with pytest.raises(SystemExit) as e:
            main(["generate", *argv, "-o", out])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and len(err.splitlines()) == 1 and says in err, (argv, err)
        assert err.startswith("streamgen generate: error: --")
