"""The tiny preset streamed over the rolling cache with backend "triton" (kernels interpreted on the
CPU) equals the reference backend within fp32 tolerance, in both RoPE modes, through eviction; and a
compiled block step does not recompile across rolling steps."""
import pytest
import torch

from streamgen.models.kv_cache import RollingKVCache
from streamgen.models.layers import AttnContext
from tests.models.helpers import latents, randomised_model, text_kv

BLOCKS = 4  # tiny: block 2, window 6, sink 2 -> the 4th block evicts the first ring block
DENOISE, REFILL = 937.5, 0.0  # the last block also re-runs clean at the same slots (the cache refill)


def _stream(model, backend: str):
    model.attention_backend = backend
    c = model.config
    cache = RollingKVCache(model.config)
    kv = text_kv(model)
    x_all = latents(model, BLOCKS * c.frames_per_block)
    outs = []
    with torch.no_grad():
        for i in range(BLOCKS):
            start = i * c.frames_per_block
            x = x_all[:, start : start + c.frames_per_block]
            for t in (DENOISE, REFILL) if i == BLOCKS - 1 else (DENOISE,):
                outs.append(model.forward_cached(x, torch.full((1, c.frames_per_block), t), kv, cache, start))
    return outs, cache


@pytest.mark.parametrize("rope_mode", ["absolute", "relative"])
def test_streaming_triton_equals_reference(interpreted, rope_mode):
    model = randomised_model(rope_mode=rope_mode)
    ref_outs, ref_cache = _stream(model, "reference")
    tri_outs, tri_cache = _stream(model, "triton")
    assert ref_cache.snapshot_pointers() == tri_cache.snapshot_pointers()
    assert ref_cache.end_frame == BLOCKS * model.config.frames_per_block
    for i, (a, b) in enumerate(zip(tri_outs, ref_outs)):
        assert a.abs().max() > 1e-3, "the randomised head must make outputs non-trivial"
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=lambda m: f"forward {i}: {m}")
    torch.testing.assert_close(tri_cache.k, ref_cache.k, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(tri_cache.v, ref_cache.v, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rope_mode", ["absolute", "relative"])
def test_compiled_block_step_does_not_recompile(interpreted, rope_mode):
    # Dynamo traces the custom ops through their fake implementations; once the (host-int) slot pointers
    # have changed they are dynamic and later rolling steps reuse the compiled graph. The relative-mode
    # key table is built outside the step (as forward_cached does), so it is just another input.
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    model = randomised_model(rope_mode=rope_mode)
    model.attention_backend = "triton"
    c = model.config
    counter = CompileCounter()
    step = torch.compile(model.run_blocks, backend=counter)
    cache = RollingKVCache(c)
    kv = text_kv(model)
    steps = 5  # the sink block, two ring blocks, then two evicting (wrapped) blocks
    x_all = latents(model, steps * c.frames_per_block)
    t = torch.full((1, c.frames_per_block), 500.0)
    compiles = []
    with torch.no_grad():
        for i in range(steps):
            start = i * c.frames_per_block
            plan = cache.plan(start, c.frames_per_block)
            if cache.relative:
                rope, key_rope = model.rope.for_positions(plan.query_positions), model.rope.for_positions(plan.key_positions)
            else:
                rope, key_rope = model.rope.for_frames(start, c.frames_per_block), None
            ctx = AttnContext(rope=rope, cache=cache, plan=plan, key_rope=key_rope)
            out = step(x_all[:, start : start + c.frames_per_block], t, kv, ctx)
            compiles.append(counter.frame_count)
    assert torch.isfinite(out).all()
    # step 0 compiles with static pointers; step 1 (new slot_start / valid_tokens) makes them dynamic.
    assert compiles[1:] == [compiles[1]] * (steps - 1) and compiles[1] <= 2, f"frame compiles per step: {compiles}"
    torch._dynamo.reset()


def test_batched_rows_triton_equal_each_row_alone(interpreted):
    """Batched sessions (streamgen.batch_step) with backend "triton": each row runs the fused cache kernels
    on its own cache at its own position and equals that row streamed alone with the reference backend."""
    model = randomised_model(rope_mode="relative")
    c = model.config
    n = c.frames_per_block
    kv = text_kv(model)
    x_all = latents(model, BLOCKS * n)

    def fill(cache, blocks):
        for i in range(blocks):
            model.forward_cached(x_all[:, i * n : (i + 1) * n], torch.full((1, n), REFILL), kv, cache, i * n)

    with torch.no_grad():
        model.attention_backend = "reference"
        alone = []
        for lead in (3, 1):  # one row rolling its window, one still filling it
            cache = RollingKVCache(c)
            fill(cache, lead)
            alone.append(model.forward_cached(x_all[:, :n], torch.full((1, n), DENOISE), kv, cache, lead * n))
        caches = [RollingKVCache(c), RollingKVCache(c)]
        fill(caches[0], 3)
        fill(caches[1], 1)
        model.attention_backend = "triton"
        x = torch.cat([x_all[:, :n], x_all[:, :n]])  # [2, n, C, H, W]
        out = model.forward_cached(x, torch.full((2, n), DENOISE), kv, caches, [3 * n, n])
    for r in range(2):
        torch.testing.assert_close(out[r : r + 1], alone[r], rtol=1e-4, atol=1e-5)
