"""Actions on tiny-world: a scripted key / mouse sequence reaches each latent frame as exactly the raw
rows its time span covers (oracle from the timestamps alone), a zero-initialised action module leaves
outputs bit-equal, and cached generation with actions equals the masked full forward."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

import streamgen
from streamgen.actions import ActionSpec, ActionState
from streamgen.config import ActionConfig
from streamgen.presets import preset
from streamgen.models.action_modules import ActionInput
from streamgen.models.audio_video import new_audio_cache
from streamgen.models.dit import CausalDiT
from streamgen.models.kv_cache import RollingKVCache

from .av_helpers import audio, joint_mask, randomised, text_kv, video

# (t_ms, key, down): a press inside a frame, a tap shorter than a frame, a release exactly on a frame
# boundary (62.5 ms frames at 16 fps), overlapping keys, a key never released, an unknown key.
SCRIPT = [
    (10.0, "KeyW", True), (140.0, "KeyW", False), (200.0, "KeyA", True), (201.0, "KeyA", False),
    (312.5, "KeyD", True), (500.0, "KeyD", False), (480.0, "KeyS", True), (530.0, "Space", True),
    (700.0, "KeyW", True), (937.5, "KeyW", False), (1100.0, "KeyD", True),
]
MOUSE = [(30.0, 4.0, -1.0), (40.0, 2.0, 0.5), (62.5, -3.0, 1.0), (333.0, 10.0, 10.0), (1249.0, -1.0, 2.0)]


def _oracle_rows(spec: ActionSpec, raw_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Keyboard / mouse rows from the timestamps alone: key k is down in frame r iff one of its closed
    down-intervals [press, release] meets [start_r, end_r); mouse = scaled sum of deltas stamped in the frame."""
    intervals = {k: [] for k in spec.keys}
    pressed_at = {}
    for t, key, down in sorted(SCRIPT):
        if key not in intervals:
            continue
        if down and key not in pressed_at:
            pressed_at[key] = t
        elif not down and key in pressed_at:
            intervals[key].append((pressed_at.pop(key), t))
    for key, t in pressed_at.items():
        intervals[key].append((t, float("inf")))
    kb = np.zeros((raw_frames, len(spec.keys)), np.float32)
    ms = np.zeros((raw_frames, 2), np.float32)
    for r in range(raw_frames):
        start, end = float(Fraction(r * 1000) / Fraction(spec.raw_fps)), float(Fraction((r + 1) * 1000) / Fraction(spec.raw_fps))
        for j, key in enumerate(spec.keys):
            kb[r, j] = any(d < end and u >= start for d, u in intervals[key])
        for t, dx, dy in MOUSE:
            if start <= t < end:
                ms[r] += np.float32(spec.mouse_scale) * np.array([dx, dy], np.float32)
    return kb, ms


def _events_until(t_end: float, sent: set) -> list[dict]:
    out = []
    for i, (t, key, down) in enumerate(SCRIPT):
        if t < t_end and ("k", i) not in sent:
            sent.add(("k", i))
            out.append({"kind": "key", "key": key, "down": down, "t_ms": t})
    for i, (t, dx, dy) in enumerate(MOUSE):
        if t < t_end and ("m", i) not in sent:
            sent.add(("m", i))
            out.append({"kind": "mouse", "dx": dx, "dy": dy, "t_ms": t})
    return out


@pytest.mark.parametrize("window", [1, 3])
def test_action_rows_reaching_each_latent_frame_are_its_time_span(window):
    pipe = streamgen.load_pipeline("tiny-world", device="cpu", overrides={"actions": ActionConfig(mouse_hidden=32, window_frames=window)})
    spec = pipe.action_spec
    c = pipe.config
    seen: list[ActionInput] = []
    hook = pipe.model.blocks[0].action.register_forward_pre_hook(lambda mod, args: seen.append(args[1]))
    session = pipe.start(seed=0, action_clock="stream")
    blocks = 5
    block_ms = float(c.block_seconds * 1000)
    sent: set = set()
    reached = []
    for k in range(blocks):
        seen.clear()
        # the client sends everything stamped before the end of the *next* block: some events arrive early
        session.step(actions=_events_until((k + 2) * block_ms, sent))
        assert len(seen) == len(pipe.timesteps) + 1  # every denoising step and the refill see the same rows
        assert all(torch.equal(s.keyboard, seen[0].keyboard) and torch.equal(s.mouse, seen[0].mouse) for s in seen)
        reached.append(seen[0])
    hook.remove()
    rpl = spec.raw_per_latent
    kb, ms = _oracle_rows(spec, blocks * c.frames_per_block * rpl)
    pad = (window - 1) * rpl  # null rows before the stream start
    kb = np.concatenate([np.zeros((pad, kb.shape[1]), np.float32), kb])
    ms = np.concatenate([np.zeros((pad, 2), np.float32), ms])
    for k, got in enumerate(reached):
        for i in range(c.frames_per_block):
            f = k * c.frames_per_block + i  # absolute latent frame; its rows are [(f - window + 1) rpl, (f + 1) rpl)
            np.testing.assert_array_equal(got.keyboard[0, i].numpy(), kb[f * rpl : f * rpl + window * rpl])
            np.testing.assert_allclose(got.mouse[0, i].numpy(), ms[f * rpl : f * rpl + window * rpl], atol=1e-7, rtol=0)
    assert kb.sum() > 0 and np.abs(ms).sum() > 0


def test_late_events_apply_at_the_next_block_start_and_held_keys_persist():
    spec = ActionSpec.from_config(preset("tiny-world"))
    state = ActionState(spec, clock="stream")
    state.block(None, 2)  # block 0: raw frames 0..7
    w = state.block([{"kind": "key", "key": "KeyS", "down": True, "t_ms": 100.0}], 2)  # stamped in block 0: late
    assert w.raw_keyboard[:, 1].tolist() == [1.0] * 8  # applied from the first frame of block 1 on
    w = state.block([], 2)
    assert w.raw_keyboard[:, 1].tolist() == [1.0] * 8  # still held
    w = state.block([{"kind": "key", "key": "KeyS", "down": False}], 2)  # no timestamp: block start
    assert w.raw_keyboard[:, 1].tolist() == [1.0] + [0.0] * 7
    with pytest.raises(ValueError, match="'jump'"):
        state.block([{"kind": "jump"}], 2)
    with pytest.raises(ValueError, match="dx"):
        state.block([{"kind": "mouse", "dx": float("nan"), "dy": 0.0}], 2)


def _mouse_frames(w) -> list[int]:
    return [int(r) for r in np.nonzero(w.raw_mouse[:, 0])[0]]


def test_client_clock_keeps_spacing_and_applies_every_event_to_the_block_it_arrives_for():
    spec = ActionSpec.from_config(preset("tiny-world"))  # 62.5 ms raw frames, 8 per block of 500 ms
    state = ActionState(spec, clock="client")
    c0 = 1_732_752_000_123.5  # a Unix-ms client clock

    def moves(*offsets):
        return [{"kind": "mouse", "dx": 1.0, "dy": 0.0, "t_ms": c0 + o} for o in offsets]

    # the first timed event anchors to the block start; the others keep their spacing
    assert _mouse_frames(state.block(moves(0.0, 70.0, 140.0), 2)) == [0, 1, 2]
    # the next batch, on the same anchor: 500 + 130 ms -> frame 2 of block 1
    assert _mouse_frames(state.block(moves(630.0), 2)) == [2]
    # a batch running past its block (the client is ahead of generation): the anchor moves, the last event
    # lands in the last frame, nothing waits for a later block
    w = state.block(moves(1400.0, 1900.0), 2)
    assert _mouse_frames(w) == [0, 7] and not state.pending
    # a batch straddling its block start: the early events are applied at the block start
    assert _mouse_frames(state.block(moves(1950.0, 2020.0), 2)) == [0]
    # a batch wholly before its block (generation ahead of the client): its first event at the block start,
    # the spacing kept
    ahead = ActionState(spec, clock="client")
    assert _mouse_frames(ahead.block(moves(0.0), 2)) == [0]
    assert _mouse_frames(ahead.block(moves(100.0, 200.0), 2)) == [0, 1]
    # t_ms of 0 means "now": the block start; held keys persist across blocks
    w = state.block([{"kind": "key", "key": "KeyA", "down": True, "t_ms": 0}], 2)
    assert w.raw_keyboard[:, 2].tolist() == [1.0] * 8 and state.held == frozenset({"KeyA"})
    with pytest.raises(ValueError, match="clock"):
        ActionState(spec, clock="wall")


def _windows(model: CausalDiT, frames: int, seed: int = 9) -> ActionInput:
    a, c = model.config.actions, model.config
    rows = a.window_frames * c.temporal_upsample
    g = torch.Generator().manual_seed(seed)
    kb = (torch.rand(1, frames, rows, len(a.keys), generator=g) > 0.5).float()
    return ActionInput(kb, torch.randn(1, frames, rows, len(a.mouse_axes), generator=g))


@torch.no_grad()
@pytest.mark.parametrize("base", ["tiny-av", "tiny"])
def test_zero_initialised_action_module_leaves_outputs_bit_equal(base):
    plain = randomised(base)
    cfg = plain.config.with_(actions=ActionConfig(mouse_hidden=32, window_frames=2))
    torch.manual_seed(5)
    world = CausalDiT(cfg)  # fresh init: action outputs are zero
    missing, unexpected = world.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(".action." in m for m in missing)
    world.attention_backend = "reference"
    world.eval()
    frames = 4
    x, kv = video(plain, frames), text_kv(plain)
    t = torch.full((1, frames), 700.0)
    acts = _windows(world, frames)
    if plain.config.audio is None:
        from streamgen.models.masks import block_causal_mask, expand_to_tokens

        mask = expand_to_tokens(block_causal_mask(frames, cfg.frames_per_block), cfg.tokens_per_frame)
        assert torch.equal(world(x, t, kv, mask=mask, actions=acts), plain(x, t, kv, mask=mask))
        return
    fa = frames // cfg.frames_per_block * cfg.audio_frames_per_block
    a, at = audio(plain, fa), torch.full((1, fa), 700.0)
    mask = joint_mask(plain, frames)
    wv, wa = world(x, t, kv, mask=mask, actions=acts, audio=a, audio_t=at)
    pv, pa = plain(x, t, kv, mask=mask, audio=a, audio_t=at)
    assert torch.equal(wv, pv) and torch.equal(wa, pa)
    # and the plumbing is live: non-zero outputs make the actions matter
    for blk in world.blocks:
        if blk.action is not None:
            torch.nn.init.normal_(blk.action.proj_keyboard.weight, std=0.1)
            torch.nn.init.normal_(blk.action.proj_mouse.weight, std=0.1)
    wv2, _ = world(x, t, kv, mask=mask, actions=acts, audio=a, audio_t=at)
    assert (wv2 - pv).abs().max() > 1e-3


@torch.no_grad()
def test_cached_generation_with_actions_equals_masked_full_forward():
    model = randomised("tiny-world", window_frames=4, sink_frames=2)
    c = model.config
    frames, nv, na = 8, c.frames_per_block, c.audio_frames_per_block
    fa = frames // nv * na
    x, a, kv, acts = video(model, frames), audio(model, fa), text_kv(model), _windows(model, frames)
    t, at = torch.full((1, frames), 400.0), torch.full((1, fa), 400.0)
    full_v, full_a = model(x, t, kv, mask=joint_mask(model, frames, windowed=True), actions=acts, audio=a, audio_t=at)
    cache, audio_cache, sinks = RollingKVCache(c), new_audio_cache(c), model.sink_kv(kv)
    for b in range(frames // nv):
        sv, sa = slice(b * nv, (b + 1) * nv), slice(b * na, (b + 1) * na)
        ov, oa = model.forward_cached(x[:, sv], t[:, sv], kv, cache, b * nv, actions=acts.frames(b * nv, nv),
                                      audio=a[:, sa], audio_t=at[:, sa], audio_cache=audio_cache, sink_kv=sinks)
        torch.testing.assert_close(ov, full_v[:, sv], atol=1e-5, rtol=0)
        torch.testing.assert_close(oa, full_a[:, sa], atol=1e-5, rtol=0)
