"""Sessions of the joint audio-video and world presets: actions in, audio out, prompt switches, and
(slow) a few hundred real blocks with exact audio / video alignment and flat state."""
from __future__ import annotations

import resource
from fractions import Fraction

import numpy as np
import pytest
import torch

import streamgen
from streamgen.config import AudioConfig
from streamgen.models.audio_video import new_audio_cache
from streamgen.models.kv_cache import RollingKVCache


def test_world_session_takes_actions_and_returns_audio():
    pipe = streamgen.load_pipeline("tiny-world", device="cpu")
    press = [{"kind": "key", "key": "KeyW", "down": True, "t_ms": 0.0}, {"kind": "mouse", "dx": 30.0, "dy": 0.0, "t_ms": 20.0}]
    a, b = pipe.start(seed=3), pipe.start(seed=3)
    ca, cb = [a.step(actions=press if k == 1 else None) for k in range(3)], [b.step() for _ in range(3)]
    assert np.array_equal(ca[0].video, cb[0].video) and np.array_equal(ca[0].audio, cb[0].audio)  # same seed, same start
    assert not np.array_equal(ca[1].video, cb[1].video)  # the key reaches the stream in the block it is stamped in
    assert a.action_state.held == frozenset({"KeyW"})
    for c in ca:
        assert c.audio.shape == (pipe.samples_per_chunk, 1) and c.audio.dtype == np.float32 and c.sample_rate == 48000
    assert set(ca[0].timings) >= {"denoise", "refill", "decode", "audio_decode", "total"}


@torch.no_grad()
@pytest.mark.parametrize("audio_window", [None, 24])  # same seconds as the video window, or a longer audio ring
def test_av_recache_on_prompt_switch_equals_fresh_computation(audio_window):
    audio_cfg = AudioConfig(channels=8, latent_rate=16.0, sample_rate=16000, window_frames=audio_window, sink_frames=8)
    pipe = streamgen.load_pipeline("tiny-world", device="cpu", overrides={"window_frames": 4, "sink_frames": 2, "audio": audio_cfg})
    c = pipe.config
    s = pipe.start(seed=0, prompt="old prompt")
    for k in range(6):
        s.step(actions=[{"kind": "key", "key": "KeyA", "down": k % 2 == 0, "t_ms": k * 500.0 + 100.0}])
    s.set_prompt("new prompt")
    kv = pipe.encode_prompt("new prompt")
    fresh_v, fresh_a = RollingKVCache(c), new_audio_cache(c)
    sinks = pipe.model.sink_kv(kv)
    n, na = c.frames_per_block, c.audio_frames_per_block
    recent = len(s.recent_latents) - len(s.recent_latents) % n  # whole blocks of the kept frames
    kept = torch.cat(s.sink_latents + list(s.recent_latents)[len(s.recent_latents) - recent :], dim=1)
    starts = list(range(0, c.sink_frames)) + list(range(s.next_frame - recent, s.next_frame))
    assert set(s.block_extras) == set(starts[::n])  # audio and actions kept for exactly the kept blocks
    for j in range(0, kept.shape[1], n):
        audio, acts = s.block_extras[starts[j]]
        pipe.model.forward_cached(kept[:, j : j + n], torch.zeros(1, n), kv, fresh_v, starts[j], actions=acts,
                                  audio=audio, audio_t=torch.zeros(1, na), audio_cache=fresh_a, sink_kv=sinks)
    for mine, fresh in ((s.cache, fresh_v), (s.audio_cache, fresh_a)):
        valid = fresh.valid_frames * fresh.tokens_per_frame
        assert mine.valid_frames == fresh.valid_frames == mine.window  # both rings refilled in full
        torch.testing.assert_close(mine.k[:, :, :valid], fresh.k[:, :, :valid], atol=1e-6, rtol=0)
    assert s.step().block_index == 6


@pytest.mark.slow
@torch.no_grad()
def test_real_av_session_stays_aligned_and_flat_over_hundreds_of_blocks():
    pipe = streamgen.load_pipeline("tiny-world", device="cpu")
    c = pipe.config
    s = pipe.start(seed=0, prompt="a long walk")
    blocks, rate, fps = 300, pipe.sample_rate, Fraction(pipe.fps)
    ptrs = (s.cache.k.data_ptr(), s.audio_cache.k.data_ptr())
    rss_warm = None
    for k in range(blocks):
        key = ["KeyW", "KeyA", "KeyS", "KeyD"][k // 10 % 4]
        events = [{"kind": "key", "key": key, "down": k % 10 < 5, "t_ms": k * 500.0 + 30.0},
                  {"kind": "mouse", "dx": 3.0, "dy": -1.0, "t_ms": k * 500.0 + 250.0}]
        chunk = s.step(actions=events)
        assert chunk.audio.shape[0] == pipe.samples_per_chunk
        assert Fraction(s.audio_samples_out, rate) == Fraction(s.video_frames_out) / fps  # no drift, ever
        assert np.isfinite(chunk.audio).all() and np.abs(chunk.audio).max() <= 1.0
        if k == 50:
            rss_warm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert s.audio_samples_out == blocks * 24000 and s.video_frames_out == blocks * pipe.frames_per_chunk
    assert (s.cache.k.data_ptr(), s.audio_cache.k.data_ptr()) == ptrs
    assert s.cache.valid_frames == c.window_frames and s.audio_cache.valid_frames == c.audio_cache_frames()[0]
    assert len(s.block_extras) <= (len(s.sink_latents) + s.recent_latents.maxlen) // c.frames_per_block
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_warm < 20_000  # KiB
