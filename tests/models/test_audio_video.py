"""Joint audio-video model on tiny-av, fp32: invariant 7 (no future leakage in any of the four
directions) and invariants 1-3 (cached = masked full forward, inference step = teacher forcing,
rolling windows = dense windowed mask) for both modalities. Tolerance 1e-5."""
from __future__ import annotations

from fractions import Fraction

import pytest
import torch

import json

from streamgen.config import AudioConfig, ModelConfig
from streamgen.presets import preset
from streamgen.models.audio_video import new_audio_cache
from streamgen.models.av_masks import av_layout, av_mask
from streamgen.models.kv_cache import RollingKVCache

from .av_helpers import audio, joint_mask, randomised, text_kv, video

ATOL = 1e-5


def _oracle(config, video_frames: int, *, teacher_forcing: bool, windows=None) -> torch.Tensor:
    """Token mask built independently: every token's block comes from the physical start time of its frame."""
    fps, tu, rate = Fraction(config.fps), config.temporal_upsample, Fraction(config.audio.latent_rate)
    block_s = config.block_seconds
    audio_frames = int(video_frames * tu / fps * rate)
    tokens = []  # (kind, block, frame index, noisy)
    halves = (False, True) if teacher_forcing else (False,)
    for noisy in halves:
        for f in range(video_frames):
            tokens += [("v", int(Fraction(f * tu) / fps // block_s), f, noisy)] * config.tokens_per_frame
    tokens += [("s", None, None, False)] * config.audio.sink_tokens
    for noisy in halves:
        for j in range(audio_frames):
            tokens.append(("a", int(Fraction(j) / rate // block_s), j, noisy))
    n = len(tokens)
    out = torch.zeros(n, n, dtype=torch.bool)
    for qi, (qk, qb, _, qn) in enumerate(tokens):
        for ki, (kk, kb, kf, kn) in enumerate(tokens):
            if kk == "s":
                ok = qk in ("a", "s")
            elif qk == "s":
                ok = False
            elif qn:
                ok = (not kn and kb < qb) or (kn and kb == qb)
            else:
                ok = not kn and kb <= qb
            if ok and windows is not None and kk != "s":
                window, sink, per_block = windows[kk]
                first_recent = (qb + 1) * per_block - (window - sink)
                ok = kf >= first_recent or kf < sink
            out[qi, ki] = ok
    return out


@pytest.mark.parametrize("teacher_forcing", [False, True])
@pytest.mark.parametrize("windowed", [False, True])
def test_7_mask_matches_block_oracle_in_all_four_directions(teacher_forcing, windowed):
    model = randomised(window_frames=4, sink_frames=2, audio=AudioConfig(channels=8, latent_rate=16.0, sample_rate=16000, window_frames=24, sink_frames=8))
    c = model.config
    frames = 8
    mask = joint_mask(model, frames, windowed=windowed, teacher_forcing=teacher_forcing)
    aw, asink = c.audio_cache_frames()
    windows = {"v": (c.window_frames, c.sink_frames, c.frames_per_block), "a": (aw, asink, c.audio_frames_per_block)}
    oracle = _oracle(c, frames, teacher_forcing=teacher_forcing, windows=windows if windowed else None)
    assert mask.shape == oracle.shape
    assert torch.equal(mask, oracle)
    # each of the four quadrants is non-trivial (some allowed, some forbidden)
    lv = frames * c.tokens_per_frame * (2 if teacher_forcing else 1)
    sinks = c.audio.sink_tokens
    for q in (slice(0, lv), slice(lv + sinks, None)):
        for k in (slice(0, lv), slice(lv + sinks, None)):
            assert mask[q, k].any() and not mask[q, k].all()


@torch.no_grad()
@pytest.mark.parametrize("modality", ["video", "audio"])
def test_7_perturbing_a_future_block_changes_nothing_before_it(modality):
    model = randomised()
    c = model.config
    frames, nv, na = 6, c.frames_per_block, c.audio_frames_per_block
    x, a, kv = video(model, frames), audio(model, frames // nv * na), text_kv(model)
    t, at = torch.full((1, frames), 500.0), torch.full((1, a.shape[1]), 500.0)
    mask = joint_mask(model, frames)
    base_v, base_a = model(x, t, kv, mask=mask, audio=a, audio_t=at)
    for block in range(1, frames // nv):
        x2, a2 = x.clone(), a.clone()
        if modality == "video":
            x2[:, block * nv :] += 3.0
        else:
            a2[:, block * na :] += 3.0
        out_v, out_a = model(x2, t, kv, mask=mask, audio=a2, audio_t=at)
        torch.testing.assert_close(out_v[:, : block * nv], base_v[:, : block * nv], atol=0, rtol=0)
        torch.testing.assert_close(out_a[:, : block * na], base_a[:, : block * na], atol=0, rtol=0)
        assert (out_v[:, block * nv :] - base_v[:, block * nv :]).abs().max() > 1e-3  # it does reach the present
        assert (out_a[:, block * na :] - base_a[:, block * na :]).abs().max() > 1e-3


def _stream(model, x, t, a, at, kv, cache, audio_cache, sinks):
    nv, na = model.config.frames_per_block, model.config.audio_frames_per_block
    outs_v, outs_a = [], []
    for b in range(x.shape[1] // nv):
        ov, oa = model.forward_cached(x[:, b * nv : (b + 1) * nv], t[:, b * nv : (b + 1) * nv], kv, cache, b * nv,
                                      audio=a[:, b * na : (b + 1) * na], audio_t=at[:, b * na : (b + 1) * na],
                                      audio_cache=audio_cache, sink_kv=sinks)
        outs_v.append(ov)
        outs_a.append(oa)
    return torch.cat(outs_v, 1), torch.cat(outs_a, 1)


@torch.no_grad()
@pytest.mark.parametrize("t_value", [0.0, 625.0])
def test_1_cached_blocks_equal_masked_full_forward_both_modalities(t_value):
    model = randomised(window_frames=8, sink_frames=0)
    c = model.config
    frames, fa = 8, 8 // c.frames_per_block * c.audio_frames_per_block
    x, a, kv = video(model, frames), audio(model, fa), text_kv(model)
    t, at = torch.full((1, frames), t_value), torch.full((1, fa), t_value)
    full_v, full_a = model(x, t, kv, mask=joint_mask(model, frames), audio=a, audio_t=at)
    stream_v, stream_a = _stream(model, x, t, a, at, kv, RollingKVCache(c), new_audio_cache(c), model.sink_kv(kv))
    assert full_v.abs().mean() > 0.1 and full_a.abs().mean() > 0.1
    torch.testing.assert_close(stream_v, full_v, atol=ATOL, rtol=0)
    torch.testing.assert_close(stream_a, full_a, atol=ATOL, rtol=0)


@torch.no_grad()
@pytest.mark.parametrize("block", [0, 1, 2])
def test_2_inference_step_equals_teacher_forcing_both_modalities(block):
    model = randomised(window_frames=6, sink_frames=0)
    c = model.config
    nv, na, frames = c.frames_per_block, c.audio_frames_per_block, 6
    fa = frames // nv * na
    clean, noisy, kv = video(model, frames, 1), video(model, frames, 3), text_kv(model)
    a_clean, a_noisy = audio(model, fa, 4), audio(model, fa, 5)
    t, at = torch.full((1, frames), 833.3), torch.full((1, fa), 833.3)
    mask = joint_mask(model, frames, teacher_forcing=True)
    train_v, train_a = model.forward_teacher_forcing(clean, noisy, t, kv, mask, audio_clean=a_clean, audio_noisy=a_noisy, audio_t=at)
    cache, audio_cache, sinks = RollingKVCache(c), new_audio_cache(c), model.sink_kv(kv)
    for b in range(block):  # clean context written by the refill pass
        model.forward_cached(clean[:, b * nv : (b + 1) * nv], torch.zeros(1, nv), kv, cache, b * nv,
                             audio=a_clean[:, b * na : (b + 1) * na], audio_t=torch.zeros(1, na), audio_cache=audio_cache, sink_kv=sinks)
    sv, sa = slice(block * nv, (block + 1) * nv), slice(block * na, (block + 1) * na)
    step_v, step_a = model.forward_cached(noisy[:, sv], t[:, sv], kv, cache, block * nv, audio=a_noisy[:, sa], audio_t=at[:, sa],
                                          audio_cache=audio_cache, sink_kv=sinks)
    torch.testing.assert_close(step_v, train_v[:, sv], atol=ATOL, rtol=0)
    torch.testing.assert_close(step_a, train_a[:, sa], atol=ATOL, rtol=0)


@torch.no_grad()
@pytest.mark.parametrize(
    "window,sink,audio_window,audio_sink",
    [(6, 2, 24, 8), (4, 0, 8, 0), (4, 2, 32, 8), (6, 0, 16, 0)],
)
def test_3_rolling_caches_equal_dense_windowed_mask(window, sink, audio_window, audio_sink):
    audio_cfg = AudioConfig(channels=8, latent_rate=16.0, sample_rate=16000, window_frames=audio_window, sink_frames=audio_sink)
    model = randomised(window_frames=window, sink_frames=sink, audio=audio_cfg)
    c = model.config
    frames = 14
    fa = frames // c.frames_per_block * c.audio_frames_per_block
    x, a, kv = video(model, frames), audio(model, fa), text_kv(model)
    t, at = torch.full((1, frames), 250.0), torch.full((1, fa), 250.0)
    full_v, full_a = model(x, t, kv, mask=joint_mask(model, frames, windowed=True), audio=a, audio_t=at)
    cache, audio_cache = RollingKVCache(c), new_audio_cache(c)
    stream_v, stream_a = _stream(model, x, t, a, at, kv, cache, audio_cache, model.sink_kv(kv))
    torch.testing.assert_close(stream_v, full_v, atol=ATOL, rtol=0)
    torch.testing.assert_close(stream_a, full_a, atol=ATOL, rtol=0)
    assert cache.valid_frames == window and audio_cache.valid_frames == audio_window  # both rolled
    # the windows matter: the unwindowed mask gives a different answer
    plain_v, _ = model(x, t, kv, mask=joint_mask(model, frames), audio=a, audio_t=at)
    assert (plain_v - full_v).abs().max() > 1e-3


def test_layout_counts_and_sink_visibility():
    layout = av_layout(2, 8, tokens_per_frame=4, video_per_block=2, audio_per_block=8, sink_tokens=1)
    mask = av_mask(layout, video_per_block=2, audio_per_block=8)
    assert len(layout) == 2 * 4 + 1 + 8
    sink = 8
    assert mask[9:, sink].all() and not mask[:8, sink].any()  # audio sees the sink, video does not
    assert mask[sink].tolist() == [i == sink for i in range(len(layout))]  # the sink sees only itself


def test_av_configs_round_trip_and_name_bad_values():
    for name in ("tiny-av", "tiny-world"):
        c = preset(name)
        assert ModelConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c  # through a config.json
    with pytest.raises(ValueError, match="latent_rate=15.0"):
        preset("tiny-av").with_(audio=AudioConfig(channels=8, latent_rate=15.0, sample_rate=16000))
    with pytest.raises(ValueError, match="sinks must cover the same blocks"):
        preset("tiny-av").with_(audio=AudioConfig(channels=8, latent_rate=16.0, sample_rate=16000, sink_frames=0))


@torch.no_grad()
def test_relative_rope_is_translation_invariant_and_bounded():
    """Relative mode (no sinks, whose identity rotation pins absolute time): a window of blocks generated far
    into the stream equals the same blocks generated from the start, and positions stay bounded."""
    from streamgen.models.av_rope import relative_shift_blocks

    audio_cfg = AudioConfig(channels=8, latent_rate=16.0, sample_rate=16000, window_frames=16, sink_frames=0, sink_tokens=0)
    model = randomised(window_frames=4, sink_frames=0, audio=audio_cfg, rope_mode="relative")
    c = model.config
    nv, na = c.frames_per_block, c.audio_frames_per_block
    x, a, kv = video(model, 6), audio(model, 24), text_kv(model)
    t, at = torch.zeros(1, 6), torch.zeros(1, 24)
    near = _stream(model, x, t, a, at, kv, RollingKVCache(c), new_audio_cache(c), [])
    cache, audio_cache, far_v, far_a = RollingKVCache(c), new_audio_cache(c), [], []
    first = 5000  # block index far past any RoPE table
    for b in range(3):
        ov, oa = model.forward_cached(x[:, b * nv : (b + 1) * nv], t[:, :nv], kv, cache, (first + b) * nv,
                                      audio=a[:, b * na : (b + 1) * na], audio_t=at[:, :na], audio_cache=audio_cache, sink_kv=[])
        far_v.append(ov)
        far_a.append(oa)
    torch.testing.assert_close(torch.cat(far_v, 1), near[0], atol=ATOL, rtol=0)
    torch.testing.assert_close(torch.cat(far_a, 1), near[1], atol=ATOL, rtol=0)
    assert (first + 2 - relative_shift_blocks(c, first + 2)) * nv < c.window_frames  # positions stay in the window


@torch.no_grad()
def test_relative_mode_equals_absolute_before_the_rings_fill():
    outs = []
    for mode in ("absolute", "relative"):
        model = randomised(window_frames=8, sink_frames=2, rope_mode=mode)
        c = model.config
        x, a, kv = video(model, 6), audio(model, 24), text_kv(model)
        t, at = torch.full((1, 6), 500.0), torch.full((1, 24), 500.0)
        outs.append(_stream(model, x, t, a, at, kv, RollingKVCache(c), new_audio_cache(c), model.sink_kv(kv)))
    torch.testing.assert_close(outs[1][0], outs[0][0], atol=ATOL, rtol=0)
    torch.testing.assert_close(outs[1][1], outs[0][1], atol=ATOL, rtol=0)
