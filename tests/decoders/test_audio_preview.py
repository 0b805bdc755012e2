"""The streaming audio decoder and resampler: chunk-by-chunk equals whole (invariant 6 for audio),
exact per-block sample counts, and audio / video alignment over 2,000 blocks of the real session code."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
import torchaudio

import streamgen
from streamgen.decoders.audio_preview import AudioDecoderConfig, AudioPreviewDecoder, StreamResampler


@torch.no_grad()
def test_streaming_audio_decode_equals_whole():
    dec = AudioPreviewDecoder(AudioDecoderConfig(latent_channels=8, samples_per_latent=1000, sample_rate=16000))
    lat = torch.randn(1, 40, 8, generator=torch.Generator().manual_seed(0))
    whole, _ = dec.decode(lat, dec.init_state())
    state, parts = dec.init_state(), []
    for s in range(0, 40, 8):
        part, state = dec.decode(lat[:, s : s + 8], state)
        parts.append(part)
    torch.testing.assert_close(torch.cat(parts, 1), whole, atol=1e-6, rtol=0)
    assert whole.abs().max() > 0.01 and whole.abs().max() <= dec.config.peak
    assert state.sample_index == 40_000


@torch.no_grad()
@pytest.mark.parametrize("orig,new,chunk", [(16000, 48000, 8000), (24000, 48000, 960), (44100, 48000, 4410), (48000, 16000, 4800)])
def test_stream_resampler_equals_torchaudio_whole_after_its_delay(orig, new, chunk):
    rs = StreamResampler(orig, new, channels=2)
    x = torch.randn(chunk * 9, 2, generator=torch.Generator().manual_seed(1))
    state, outs = rs.init_state(), []
    for i in range(9):
        y, state = rs.process(x[i * chunk : (i + 1) * chunk], state)
        assert y.shape == (chunk * new // orig, 2)  # exactly duration x rate, every chunk
        outs.append(y)
    y = torch.cat(outs)
    ref = torchaudio.functional.resample(x.T, orig, new).T
    d = rs.delay_samples
    assert d / new < 0.005  # a few milliseconds of latency at most (one polyphase frame for 44.1 kHz)
    assert torch.equal(y[:d], torch.zeros(d, 2))
    torch.testing.assert_close(y[d:], ref[: y.shape[0] - d], atol=1e-5 * ref.abs().max().item(), rtol=0)
    assert state.buffer.shape[1] <= 2 * rs.width + rs.o  # bounded state


@torch.no_grad()
def test_session_audio_chunks_equal_whole_decode_and_resample():
    pipe = streamgen.load_pipeline("tiny-av", device="cpu")
    s = pipe.start(seed=0)
    latents = []
    orig_decode = pipe.audio_decoder.decode

    def spy(lat, state):
        latents.append(lat.clone())
        return orig_decode(lat, state)

    pipe.audio_decoder.decode = spy
    chunks = [s.step() for _ in range(6)]
    del pipe.audio_decoder.decode
    wave = np.concatenate([c.audio for c in chunks])
    native, _ = pipe.audio_decoder.decode(torch.cat(latents, 1), pipe.audio_decoder.init_state())
    a = pipe.config.audio
    ref = torchaudio.functional.resample(native[0].T, a.sample_rate, a.output_sample_rate).T.numpy()
    d = pipe.resampler.delay_samples
    np.testing.assert_allclose(wave[d:], ref[: len(wave) - d], atol=1e-6, rtol=0)
    assert np.abs(wave).max() > 0.01


@torch.no_grad()
def test_audio_and_video_stay_aligned_over_2000_blocks():
    """The bookkeeping of Session.emit (the code step() runs after denoising) over 2,000 blocks: every
    chunk carries exactly block_seconds x 48 kHz samples and the running counts never drift."""
    pipe = streamgen.load_pipeline("tiny-av", device="cpu")
    c = pipe.config
    s = pipe.start(seed=0)
    g = torch.Generator().manual_seed(0)
    video = torch.randn(1, c.frames_per_block, c.in_channels, c.latent_height, c.latent_width, generator=g)
    audio = torch.randn(1, c.audio_frames_per_block, c.audio.channels, generator=g)
    per_chunk = Fraction(c.block_seconds) * pipe.sample_rate
    assert per_chunk.denominator == 1 and pipe.samples_per_chunk == per_chunk
    for k in range(2000):
        chunk = s.emit(video * (1 + k % 3), audio * (1 + k % 5))
        assert chunk.audio.shape == (pipe.samples_per_chunk, 1) and chunk.audio.dtype == np.float32
        assert chunk.sample_rate == 48000 and chunk.video.shape[0] == pipe.frames_per_chunk
        # the first audio sample and the first video frame of every chunk are at the same instant
        assert Fraction(chunk.sample_index, chunk.sample_rate) == Fraction(chunk.frame_index) / Fraction(pipe.fps)
    duration = Fraction(s.video_frames_out) / Fraction(pipe.fps)
    assert s.video_frames_out == 2000 * pipe.frames_per_chunk
    assert s.audio_samples_out == duration * pipe.sample_rate == 2000 * 24000  # 1000 s of audio, exactly


def test_pipeline_reports_audio_and_actions():
    av, world, tiny = (streamgen.load_pipeline(n, device="cpu") for n in ("tiny-av", "tiny-world", "tiny"))
    assert av.sample_rate == world.sample_rate == 48000 and tiny.sample_rate is None
    assert av.action_spec is None and tiny.action_spec is None
    assert world.describe()["keys"] == list(world.action_spec.keys) == ["KeyW", "KeyS", "KeyA", "KeyD"]
    assert tiny.describe()["keys"] == [] and tiny.start().step().audio is None
