"""Batched sessions (streamgen.batch_step): a session's blocks are the same batched as alone (fp32, 1e-5).

Two copies of the same random pipeline: on one every session steps alone, on the other they step together
through ``step_batch``. The sessions differ in seed, stream position (one already rolling its window, one
joining late, one in between), prompt (and prompt length) and actions; every block's latents, frames,
audio and counters, and the state each session keeps (cache pointers, decoder and action state), must
match.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from streamgen.batch_step import batch_text_kv, step_batch
from streamgen.presets import preset
from streamgen.pipeline import random_pipeline

from .helpers import randomised

TOL = 1e-5


def _pipe(config):
    pipe = random_pipeline(config, "cpu", torch.float32)
    model = randomised(config.name, 0, rope_mode=config.rope_mode)
    pipe.model.load_state_dict(model.state_dict())  # every weight random: no output is trivially equal
    return pipe


def _events(pipe, session: int, block: int):
    """Different keys per session and block (None for models without actions)."""
    spec = pipe.action_spec
    if spec is None:
        return None
    key = spec.keys[(session + block) % len(spec.keys)]
    return [{"kind": "key", "key": key, "down": (session + block) % 3 != 2, "t_ms": 10.0 * block}]


def _latents(session) -> torch.Tensor:
    return torch.cat(list(session.sink_latents) + list(session.recent_latents), dim=1)


def _check_same(a, b) -> None:
    assert (a.block_index, a.frame_index, a.sample_index) == (b.block_index, b.frame_index, b.sample_index)
    assert np.abs(a.video.astype(np.int16) - b.video.astype(np.int16)).max() <= 1  # uint8 rounding of ~1e-6
    if a.audio is not None:
        assert np.abs(a.audio - b.audio).max() <= TOL


@pytest.mark.parametrize("name, rope_mode", [("tiny", "relative"), ("tiny", "absolute"), ("tiny-world", "relative")])
def test_sessions_are_the_same_batched_as_alone(name, rope_mode):
    config = preset(name).with_(rope_mode=rope_mode)
    alone_pipe, batch_pipe = _pipe(config), _pipe(config)
    # (seed, blocks already streamed): 5 blocks of 2 frames roll a window of 6 (sink 2); 0 joins late.
    plan = [(11, 5), (22, 0), (33, 2)]
    alone = [alone_pipe.start(seed=s) for s, _ in plan]
    batched = [batch_pipe.start(seed=s) for s, _ in plan]
    for i, (_, lead) in enumerate(plan):
        for blk in range(lead):
            alone[i].step(_events(alone_pipe, i, blk))
            batched[i].step(_events(batch_pipe, i, blk))
    if config.takes_prompt:
        # Different prompts, one of another length (cross-attention row by row), switched mid-stream.
        text = torch.randn(1, config.text_len + 3, config.text_dim, generator=torch.Generator().manual_seed(5))
        for sessions in (alone, batched):
            sessions[0].set_prompt("a red ball")
            sessions[2].set_text(text)
        assert isinstance(batch_text_kv([s.text_kv for s in batched])[0], list)

    for blk in range(4):
        events = [_events(alone_pipe, i, blk + lead) for i, (_, lead) in enumerate(plan)]
        want = [s.step(e) for s, e in zip(alone, events)]
        got = step_batch(batched, events)
        for a, b in zip(want, got):
            _check_same(a, b)
        if blk == 1 and config.takes_prompt:
            for sessions in (alone, batched):  # the same prompt for all: one shared text K / V
                for s in sessions:
                    s.set_prompt("a red ball")
            assert batch_text_kv([s.text_kv for s in batched]) is batched[0].text_kv
        if blk == 2 and config.takes_prompt:
            for sessions in (alone, batched):  # prompts of one length: K / V stacked [N, Lc, H, D]
                sessions[2].set_prompt("a blue ball")
            assert batch_text_kv([s.text_kv for s in batched])[0][0].shape[0] == len(batched)

    for a, b in zip(alone, batched):
        assert (a.block_index, a.next_frame, a.video_frames_out) == (b.block_index, b.next_frame, b.video_frames_out)
        assert (_latents(a) - _latents(b)).abs().max() <= TOL
        assert a.cache.snapshot_pointers() == b.cache.snapshot_pointers()
        assert (a.cache.k - b.cache.k).abs().max() <= TOL and (a.cache.v - b.cache.v).abs().max() <= TOL
        if a.audio_cache is not None:
            assert a.audio_cache.snapshot_pointers() == b.audio_cache.snapshot_pointers()
            assert (a.audio_cache.k - b.audio_cache.k).abs().max() <= TOL
            assert a.audio_samples_out == b.audio_samples_out
        if a.action_state is not None:
            assert a.action_state.held == b.action_state.held and a.action_state.next_raw == b.action_state.next_raw
        state_a, state_b = vars(a.decoder_state), vars(b.decoder_state)
        assert any(isinstance(x, torch.Tensor) for x in state_a.values())  # the decoder carries state
        for key, x in state_a.items():
            if isinstance(x, torch.Tensor):
                assert (x - state_b[key]).abs().max() <= TOL
    rolled = alone[0].cache
    assert rolled.end_frame > rolled.window  # the first session really rolled its window


def test_batch_of_one_is_the_session_step_and_bad_batches_are_refused():
    config = preset("tiny")
    p1, p2 = _pipe(config), _pipe(config)
    a, b = p1.start(seed=3), p1.start(seed=3)
    for _ in range(3):
        assert np.array_equal(a.step().video, step_batch([b])[0].video)
    with pytest.raises(ValueError, match="one pipeline"):
        step_batch([a, p2.start(seed=1)])
    with pytest.raises(ValueError, match="twice"):
        step_batch([a, a])
    with pytest.raises(ValueError, match="2 action lists for 1 sessions"):
        step_batch([a], [None, None])
    b.close()
    with pytest.raises(RuntimeError, match="closed"):
        step_batch([a, b])


def test_feature_cached_sessions_step_one_by_one_and_equal_alone():
    """A feature cache keeps its reuse state per session cache, so its sessions are not batched (the
    server's batched warm-up once crashed on it); stepped together they still give what alone gives."""
    from streamgen.batch_step import batchable
    from streamgen.pipeline import load_pipeline

    pipe = load_pipeline("tiny", device="cpu", feature_cache="reuse@1")
    together = [pipe.start(seed=s) for s in (1, 2)]
    alone = [pipe.start(seed=s) for s in (1, 2)]
    assert not batchable(together[0])
    for _ in range(3):
        chunks = step_batch(together)
        for a, c in zip(alone, chunks):
            np.testing.assert_array_equal(a.step().video, c.video)


def test_a_block_decodes_on_a_worker_beside_the_refill_and_a_failed_refill_waits_for_it():
    """On a CPU the block's decode runs on another thread while the refill runs here; when the refill
    fails, the decode has still completed before the error propagates (no worker left running on a failed
    step), and each chunk's timings include the refill."""
    import threading
    from types import SimpleNamespace

    from streamgen.block_decode import beside_refill

    seen = {}
    cpu_pipe = SimpleNamespace(device=torch.device("cpu"), decode_stream=None)

    def decode():
        seen["decode"] = threading.get_ident()
        seen["inference"] = torch.is_inference_mode_enabled()
        return ["decoded"]

    def refill():
        seen["refill"] = threading.get_ident()

    assert beside_refill(cpu_pipe, decode, refill) == ["decoded"]
    assert seen["refill"] == threading.get_ident() != seen["decode"] and seen["inference"]

    def failing_refill():
        raise RuntimeError("refill broke")

    seen.clear()
    with pytest.raises(RuntimeError, match="refill broke"):
        beside_refill(cpu_pipe, decode, failing_refill)
    assert "decode" in seen

    pipe = _pipe(preset("tiny-world"))
    for chunks in (step_batch([pipe.start(seed=1), pipe.start(seed=2)]), [pipe.start(seed=3).step()]):
        assert all({"denoise", "refill", "decode", "audio_decode", "total"} <= set(c.timings) for c in chunks)
        assert all(c.timings["total"] >= c.timings["denoise"] + c.timings["refill"] for c in chunks)
