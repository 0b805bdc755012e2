"""The public session API and invariant 8 (flat memory over long streams)."""
import resource

import numpy as np
import torch

import streamgen
from streamgen.models.kv_cache import RollingKVCache


def test_session_steps_and_chunks():
    pipe = streamgen.load_pipeline("tiny", device="cpu")
    s = pipe.start(seed=0, prompt="a red ball")
    chunks = [s.step() for _ in range(4)]
    assert [c.block_index for c in chunks] == [0, 1, 2, 3]
    assert all(c.video.dtype == np.uint8 and c.video.shape == (pipe.frames_per_chunk, pipe.height, pipe.width, 3) for c in chunks)
    assert chunks[1].frame_index == pipe.frames_per_chunk
    assert set(chunks[0].timings) >= {"denoise", "refill", "decode", "total"}
    # same seed, same stream; another seed, another stream
    again = pipe.start(seed=0, prompt="a red ball").step()
    other = pipe.start(seed=1, prompt="a red ball").step()
    assert np.array_equal(again.video, chunks[0].video)
    assert not np.array_equal(other.video, chunks[0].video)
    s.close()


@torch.no_grad()
def test_recache_on_prompt_switch_equals_fresh_computation_under_new_prompt():
    pipe = streamgen.load_pipeline("tiny", device="cpu")
    s = pipe.start(seed=0, prompt="old prompt")
    for _ in range(5):
        s.step()
    s.set_prompt("new prompt")
    # Oracle: a fresh cache filled block by block with the kept clean latents under the new prompt.
    c = pipe.config
    fresh = RollingKVCache(c)
    kv = pipe.encode_prompt("new prompt")
    kept = torch.cat(s.sink_latents + list(s.recent_latents), dim=1)
    starts = list(range(0, c.sink_frames)) + list(range(s.next_frame - len(s.recent_latents), s.next_frame))
    for j in range(0, kept.shape[1], c.frames_per_block):
        pipe.model.forward_cached(kept[:, j : j + 2], torch.zeros(1, 2), kv, fresh, starts[j])
    valid = s.cache.valid_frames * c.tokens_per_frame
    assert valid == fresh.valid_frames * c.tokens_per_frame
    torch.testing.assert_close(s.cache.k[:, :, :valid], fresh.k[:, :, :valid], atol=1e-6, rtol=0)
    assert s.step().block_index == 5


def test_recompute_mode_streams():
    pipe = streamgen.load_pipeline("tiny", device="cpu", overrides={"prompt_switch": "recompute", "recompute_frames": 2})
    s = pipe.start(seed=0)
    for _ in range(6):
        s.step()
    s.set_prompt("switch")
    assert s.step().video.shape[0] == pipe.frames_per_chunk


def test_8_memory_is_flat_over_a_long_stream():
    pipe = streamgen.load_pipeline("tiny", device="cpu")
    s = pipe.start(seed=0)
    ptr_k, ptr_v = s.cache.k.data_ptr(), s.cache.v.data_ptr()
    for _ in range(50):
        s.step()
    rss_warm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(400):
        s.step()
    rss_end = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert (s.cache.k.data_ptr(), s.cache.v.data_ptr()) == (ptr_k, ptr_v)  # static buffers, never reallocated
    assert s.cache.valid_frames == pipe.config.window_frames
    assert len(s.cache.slot_of_frame) == pipe.config.window_frames and len(s.cache.block_size) <= pipe.config.window_frames
    assert len(s.recent_latents) <= s.recent_latents.maxlen
    assert rss_end - rss_warm < 20_000  # KiB: no growth beyond allocator noise over 400 blocks
    s.close()
    assert s.cache is None
