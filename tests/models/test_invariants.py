"""Cache invariants of docs/architecture.md on the tiny preset, fp32, tolerance 1e-5."""
from __future__ import annotations

import pytest
import torch

from streamgen.models.kv_cache import RollingKVCache
from streamgen.models.masks import block_causal_mask, expand_to_tokens, teacher_forcing_mask
from streamgen.models.rope import RopeTable, apply_rope

from .helpers import latents, randomised_model, text_kv

ATOL = 1e-5


def _stream(model, x, t, kv, cache):
    n = model.config.frames_per_block
    return torch.cat([model.forward_cached(x[:, s : s + n], t[:, s : s + n], kv, cache, s) for s in range(0, x.shape[1], n)], dim=1)


@torch.no_grad()
@pytest.mark.parametrize("t_value", [0.0, 625.0])
def test_1_cached_blocks_equal_block_causal_full_forward(t_value):
    model = randomised_model(window_frames=8, sink_frames=0, rope_mode="absolute")
    c = model.config
    x, kv = latents(model, 8), text_kv(model)
    t = torch.full((1, 8), t_value)
    mask = expand_to_tokens(block_causal_mask(8, c.frames_per_block), c.tokens_per_frame)
    full = model(x, t, kv, mask=mask)
    streamed = _stream(model, x, t, kv, RollingKVCache(c))
    assert full.abs().mean() > 0.1  # the comparison is not between zeros
    torch.testing.assert_close(streamed, full, atol=ATOL, rtol=0)


@torch.no_grad()
@pytest.mark.parametrize("block", [0, 1, 2])
def test_2_inference_step_equals_teacher_forcing_forward(block):
    model = randomised_model(window_frames=6, sink_frames=0, rope_mode="absolute")
    c = model.config
    n, frames = c.frames_per_block, 6
    clean, noisy, kv = latents(model, frames, 1), latents(model, frames, 3), text_kv(model)
    t = torch.full((1, frames), 833.3)
    mask = expand_to_tokens(teacher_forcing_mask(frames, n), c.tokens_per_frame)
    train = model.forward_teacher_forcing(clean, noisy, t, kv, mask)
    cache = RollingKVCache(c)
    zeros = torch.zeros(1, n)
    for s in range(0, block * n, n):  # clean context written by the refill pass
        model.forward_cached(clean[:, s : s + n], zeros, kv, cache, s)
    s = block * n
    step = model.forward_cached(noisy[:, s : s + n], t[:, s : s + n], kv, cache, s)
    torch.testing.assert_close(step, train[:, s : s + n], atol=ATOL, rtol=0)


@torch.no_grad()
@pytest.mark.parametrize("window,sink", [(6, 2), (4, 0), (8, 4), (6, 0)])
def test_3_rolling_window_equals_dense_window_mask(window, sink):
    model = randomised_model(window_frames=window, sink_frames=sink, rope_mode="absolute")
    c = model.config
    frames = 16
    x, kv = latents(model, frames), text_kv(model)
    t = torch.zeros(1, frames)
    dense = block_causal_mask(frames, c.frames_per_block, window=window, sink=sink)
    full = model(x, t, kv, mask=expand_to_tokens(dense, c.tokens_per_frame))
    cache = RollingKVCache(c)
    streamed = _stream(model, x, t, kv, cache)
    torch.testing.assert_close(streamed, full, atol=ATOL, rtol=0)
    assert cache.valid_frames == window
    assert sorted(cache.frame_at_slot[:sink]) == list(range(sink))  # the sink never moves


@torch.no_grad()
def test_3b_relative_rope_equals_absolute_inside_the_window():
    # While the stream fits the window the window ranks are the absolute positions.
    kw = dict(window_frames=8, sink_frames=2)
    rel, ab = randomised_model(rope_mode="relative", **kw), randomised_model(rope_mode="absolute", **kw)
    x, kv = latents(ab, 8), text_kv(ab)
    t = torch.full((1, 8), 500.0)
    torch.testing.assert_close(_stream(rel, x, t, kv, RollingKVCache(rel.config)), _stream(ab, x, t, kv, RollingKVCache(ab.config)), atol=ATOL, rtol=0)


@torch.no_grad()
def test_3c_relative_rope_is_translation_invariant_without_sink():
    # Logits depend only on position differences: a window rolled far away gives the same output as the
    # same frames generated from position 0 (absolute mode cannot do this past its table).
    model = randomised_model(rope_mode="relative", window_frames=4, sink_frames=0)
    c = model.config
    x, kv = latents(model, 4), text_kv(model)
    t = torch.zeros(1, 4)
    near = _stream(model, x, t, kv, RollingKVCache(c))
    cache = RollingKVCache(c)
    far = [model.forward_cached(x[:, s : s + 2], t[:, s : s + 2], kv, cache, 5000 + s) for s in (0, 2)]
    torch.testing.assert_close(torch.cat(far, 1), near, atol=ATOL, rtol=0)


@torch.no_grad()
@pytest.mark.parametrize("rope_mode", ["absolute", "relative"])
def test_4_rerun_is_idempotent_and_touches_only_its_slots(rope_mode):
    model = randomised_model(window_frames=6, sink_frames=2, rope_mode=rope_mode)
    c = model.config
    kv = text_kv(model)
    cache = RollingKVCache(c)
    x = latents(model, 10)
    for s in range(0, 8, 2):
        model.forward_cached(x[:, s : s + 2], torch.zeros(1, 2), kv, cache, s)
    pointers, k_before, v_before = cache.snapshot_pointers(), cache.k.clone(), cache.v.clone()
    plan = cache.plan(8, 2)  # a new block (evicts), then re-run it several times
    cache.reset()  # rebuild to the same state, then do the real run
    for s in range(0, 8, 2):
        model.forward_cached(x[:, s : s + 2], torch.zeros(1, 2), kv, cache, s)
    assert cache.snapshot_pointers() == pointers
    model.forward_cached(x[:, 8:10], torch.full((1, 2), 937.5), kv, cache, 8)
    after_first = cache.snapshot_pointers()
    k_first = cache.k.clone()
    for t in (833.3, 625.0, 0.0):
        model.forward_cached(latents(model, 2, seed=int(t)), torch.full((1, 2), t), kv, cache, 8)
        assert cache.snapshot_pointers() == after_first
    s0, s1 = plan.slot_start, plan.slot_start + plan.num_tokens
    outside = torch.ones(cache.k.shape[2], dtype=torch.bool)
    outside[s0:s1] = False
    torch.testing.assert_close(cache.k[:, :, outside], k_first[:, :, outside], atol=0, rtol=0)
    torch.testing.assert_close(cache.k[:, :, outside], k_before[:, :, outside], atol=0, rtol=0)
    torch.testing.assert_close(cache.v[:, :, outside], v_before[:, :, outside], atol=0, rtol=0)
    # the re-run slots hold exactly what a single run of the last input writes
    fresh = RollingKVCache(c)
    for s in range(0, 8, 2):
        model.forward_cached(x[:, s : s + 2], torch.zeros(1, 2), kv, fresh, s)
    model.forward_cached(latents(model, 2, seed=0), torch.zeros(1, 2), kv, fresh, 8)
    torch.testing.assert_close(cache.k[:, :, s0:s1], fresh.k[:, :, s0:s1], atol=0, rtol=0)


def test_4b_cache_rejects_blocks_it_cannot_place():
    model = randomised_model(window_frames=6, sink_frames=2)
    cache = RollingKVCache(model.config)
    for s in range(0, 10, 2):
        cache.plan(s, 2)
    with pytest.raises(ValueError, match="evicted"):
        cache.plan(2, 2)
    with pytest.raises(ValueError, match="not written as one block"):
        cache.plan(7, 2)


@pytest.mark.parametrize("start,count", [(0, 3), (5, 2), (1000, 4)])
def test_5_rope_slice_with_offset_equals_slice_of_whole(start, count):
    model = randomised_model(rope_max_positions=1024 + 8)
    c = model.config
    table = RopeTable(c)
    total = start + count
    x = torch.randn(1, total * c.tokens_per_frame, c.num_heads, c.head_dim, dtype=torch.float32)
    whole = apply_rope(x, *table.for_frames(0, total))
    tpf = c.tokens_per_frame
    sliced = apply_rope(x[:, start * tpf :], *table.for_frames(start, count))
    torch.testing.assert_close(sliced, whole[:, start * tpf :], atol=0, rtol=0)
    # rotation preserves norms
    torch.testing.assert_close(whole.norm(dim=-1), x.norm(dim=-1), atol=1e-5, rtol=1e-6)


def test_5b_absolute_rope_table_end_is_a_clear_error():
    model = randomised_model(rope_mode="absolute")
    with pytest.raises(ValueError, match="relative"):
        RopeTable(model.config).for_frames(1023, 2)
