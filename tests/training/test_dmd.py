"""DMD gradient identity, CFG, and the Self-Forcing rollout: the session's loop, one gradient-carrying
forward per block, no gradient across blocks."""
from __future__ import annotations

import pytest
import torch

from streamgen.presets import preset
from streamgen.models.dit import CausalDiT
from streamgen.pipeline import load_pipeline
from streamgen.samplers import predict_x0, warped_timesteps
from streamgen.training.conditioning import frame_timesteps, make_cond
from streamgen.training.modalities import predict
from streamgen.training.losses import dmd_gradient, dmd_loss, guided, real_score_x0, sample_timesteps
from streamgen.training.rollout import self_forcing_rollout


def _model(seed=0):
    torch.manual_seed(seed)
    model = CausalDiT(preset("tiny"))
    torch.nn.init.normal_(model.head.head.weight, std=0.05)
    return model


def _batch(model, b=1, frames=6, seed=3):
    c = model.config
    g = torch.Generator().manual_seed(seed)
    return {"latents": torch.zeros(b, frames, c.in_channels, c.latent_height, c.latent_width),
            "text": torch.randn(b, c.text_len, c.text_dim, generator=g)}


def test_dmd_loss_gradient_is_grad_over_numel_with_per_sample_normaliser():
    g = torch.Generator().manual_seed(0)
    shape = (3, 4, 2, 3, 3)
    x = torch.randn(shape, generator=g, dtype=torch.float64).requires_grad_(True)
    p_real, p_fake = torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64)
    grad = dmd_gradient(x.detach(), p_real, p_fake)
    for i in range(shape[0]):  # per-sample normaliser mean|x - p_real| over C, F, H, W
        norm = (x[i].detach() - p_real[i]).abs().mean()
        torch.testing.assert_close(grad[i], (p_fake[i] - p_real[i]) / norm)
    loss = dmd_loss(x, grad)
    (autograd,) = torch.autograd.grad(loss, x)
    torch.testing.assert_close(autograd, grad / x.numel(), rtol=1e-12, atol=1e-15)
    # Scaling one sample's distance to p_real rescales only that sample's gradient.
    x2 = x.detach().clone()
    x2[1] = p_real[1] + 10 * (x2[1] - p_real[1])
    grad2 = dmd_gradient(x2, p_real, p_fake)
    torch.testing.assert_close(grad2[0], grad[0])
    torch.testing.assert_close(grad2[1], grad[1] / 10)


def test_cfg_formula_and_real_score():
    cond, uncond = torch.randn(2, 3), torch.randn(2, 3)
    torch.testing.assert_close(guided(cond, uncond, 4.0), uncond + 4.0 * (cond - uncond))
    torch.testing.assert_close(guided(cond, uncond, 4.0), cond + 3.0 * (cond - uncond))  # SF's "3.0"
    model = _model()
    batch = _batch(model)
    c, u = make_cond(model, batch), make_cond(model, batch, uncond=True)
    x_t = torch.randn(1, 6, 4, 4, 4)
    t = frame_timesteps(700.0, 1, 6, "cpu")
    with torch.no_grad():
        v_c, v_u = predict(model, {"latents": x_t}, t, c)["latents"], predict(model, {"latents": x_t}, t, u)["latents"]
        assert not torch.allclose(v_c, v_u)
        expected = predict_x0(x_t, v_u + 3.5 * (v_c - v_u), t)
    torch.testing.assert_close(real_score_x0(model, {"latents": x_t}, t, c, u, 3.5)["latents"], expected)


def test_score_timesteps_are_shifted_and_clamped():
    t = sample_timesteps(4000, torch.Generator().manual_seed(0), shift=5.0, min_t=20.0, max_t=980.0)
    assert float(t.min()) >= 20.0 and float(t.max()) <= 980.0
    assert float(t.median()) > 700  # shift 5 puts most mass at high noise: median sigma = 5/6


@pytest.mark.parametrize("exit_index", [0, 1, 3])
def test_one_gradient_forward_per_block_and_no_gradient_across_blocks(exit_index):
    model = _model()
    calls = []
    handle = model.blocks[0].register_forward_hook(lambda m, a, o: calls.append(torch.is_grad_enabled()))
    steps = warped_timesteps(model.config.denoising_steps, model.config.shift)
    blocks = 3
    roll = self_forcing_rollout(model, make_cond(model, _batch(model)), batch=1, num_frames=blocks * 2, timesteps=steps,
                                exit_index=exit_index, noise_generator=torch.Generator().manual_seed(0))
    handle.remove()
    assert sum(calls) == blocks  # exactly one gradient-carrying forward per block
    assert len(calls) == blocks * (exit_index + 1 + 1)  # steps up to the exit, plus the detached refill
    assert not roll.cache.k.requires_grad and not roll.cache.v.requires_grad
    for k in range(1, blocks):
        earlier = [blk["latents"] for blk in roll.blocks[:k]]
        grads = torch.autograd.grad(roll.blocks[k]["latents"].square().sum(), earlier, allow_unused=True, retain_graph=True)
        assert all(g is None for g in grads), f"block {k}'s loss reaches earlier blocks"
    params = [p for p in model.parameters()]
    grads = torch.autograd.grad(roll.blocks[-1]["latents"].square().sum(), params, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", ["tiny", "tiny-world"])
def test_rollout_is_the_session_loop(name):
    """With the exit at the last step, batch 1 and the session's seed, the rollout's latents equal the
    latents a streaming Session generates (the gradient-carrying last step included); for the world
    preset with its audio stream and (null) action windows too."""
    pipe = load_pipeline(name, device="cpu")
    model, cfg = pipe.model, pipe.config
    blocks = 3
    batch = {"latents": torch.zeros(1, blocks * cfg.frames_per_block, 1), "text": pipe.text_encoder("a red ball")}
    if cfg.actions is not None:  # the session's null action: every window row zero
        rows = cfg.actions.window_frames * cfg.temporal_upsample
        batch["keyboard"] = torch.zeros(1, blocks * cfg.frames_per_block, rows, len(cfg.actions.keys))
        batch["mouse"] = torch.zeros(1, blocks * cfg.frames_per_block, rows, len(cfg.actions.mouse_axes))
    roll = self_forcing_rollout(model, make_cond(model, batch), batch=1, num_frames=blocks * cfg.frames_per_block,
                                timesteps=pipe.timesteps, exit_index=len(pipe.timesteps) - 1,
                                noise_generator=torch.Generator().manual_seed(5))
    session = pipe.start(seed=5, prompt="a red ball")
    for _ in range(blocks):
        session.step()
    streamed = torch.cat(session.sink_latents + list(session.recent_latents), dim=1)  # [1, 6, C, H, W]
    assert roll.latents.requires_grad
    assert torch.equal(roll.latents.detach(), streamed)
    if cfg.audio is not None:
        na = cfg.audio_frames_per_block
        for start, (audio, _) in session.block_extras.items():
            k = start // cfg.frames_per_block
            assert torch.equal(roll.streams["audio"][:, k * na : (k + 1) * na].detach(), audio)
        assert session.block_extras


def test_long_rollout_carries_gradient_only_in_the_judged_window():
    model = _model()
    calls = []
    handle = model.blocks[0].register_forward_hook(lambda m, a, o: calls.append(torch.is_grad_enabled()))
    steps = warped_timesteps(model.config.denoising_steps, model.config.shift)
    blocks = 5  # 10 frames: past the window of 6, so the cache evicts (sink kept)
    roll = self_forcing_rollout(model, make_cond(model, _batch(model, frames=10)), batch=1, num_frames=10, timesteps=steps,
                                exit_index=2, noise_generator=torch.Generator().manual_seed(0), grad_from_block=2)
    handle.remove()
    assert sum(calls) == blocks - 2 and len(calls) == blocks * 4
    assert [blk["latents"].requires_grad for blk in roll.blocks] == [False, False, True, True, True]
    assert roll.cache.frame_at_slot[:2] == [0, 1]  # the sink frames stayed


@pytest.mark.parametrize("name", ["tiny", "tiny-world"])
def test_prompt_switch_recache_is_the_session_set_prompt(name):
    """A rollout that switches prompt before block 3 of 5 (past the window: the cache has evicted)
    generates exactly what a Session does with ``set_prompt`` at that block (LongLive re-cache)."""
    pipe = load_pipeline(name, device="cpu")
    model, cfg = pipe.model, pipe.config
    blocks, switch_at = 5, 3
    frames = blocks * cfg.frames_per_block

    def batch_for(prompt):
        out = {"latents": torch.zeros(1, frames, 1), "text": pipe.text_encoder(prompt)}
        if cfg.actions is not None:
            rows = cfg.actions.window_frames * cfg.temporal_upsample
            out["keyboard"] = torch.zeros(1, frames, rows, len(cfg.actions.keys))
            out["mouse"] = torch.zeros(1, frames, rows, len(cfg.actions.mouse_axes))
        return out

    with torch.no_grad():
        roll = self_forcing_rollout(model, make_cond(model, batch_for("a red ball")), batch=1, num_frames=frames,
                                    timesteps=pipe.timesteps, exit_index=len(pipe.timesteps) - 1, grad=False,
                                    noise_generator=torch.Generator().manual_seed(7),
                                    switch=(switch_at, make_cond(model, batch_for("a blue square"))))
    session = pipe.start(seed=7, prompt="a red ball")
    for k in range(blocks):
        if k == switch_at:
            session.set_prompt("a blue square")
        session.step()
    tail = torch.cat(list(session.recent_latents), dim=1)  # the last frames the session kept
    assert torch.equal(roll.latents[:, frames - tail.shape[1] :], tail)
    with torch.no_grad():
        plain = self_forcing_rollout(model, make_cond(model, batch_for("a red ball")), batch=1, num_frames=frames,
                                     timesteps=pipe.timesteps, exit_index=len(pipe.timesteps) - 1, grad=False,
                                     noise_generator=torch.Generator().manual_seed(7))
    assert not torch.equal(plain.latents[:, -2:], roll.latents[:, -2:])  # the switch changed the continuation


def test_causal_teacher_trajectories_go_block_by_block():
    """With ``teacher_kind=causal`` block 0 sees only itself, so its trajectory equals the whole-clip
    integration of block 0 alone; later blocks see the clean earlier blocks through the caches."""
    from streamgen.training.ode import teacher_trajectory

    model = _model()
    c, u = make_cond(model, _batch(model)), make_cond(model, _batch(model), uncond=True)
    steps = warped_timesteps(model.config.denoising_steps, model.config.shift)
    noise = {"latents": torch.randn(1, 6, 4, 4, 4, generator=torch.Generator().manual_seed(1))}
    kw = dict(student_steps=steps, substeps=3, scale=3.0, shift=5.0)
    causal = teacher_trajectory(model, noise, c, u, causal=True, **kw)["latents"]  # [S+1, 1, 6, C, H, W]
    alone = teacher_trajectory(model, {"latents": noise["latents"][:, :2]}, c, u, **kw)["latents"]
    whole = teacher_trajectory(model, noise, c, u, **kw)["latents"]
    assert causal.shape == (len(steps) + 1, 1, 6, 4, 4, 4)
    torch.testing.assert_close(causal[:, :, :2], alone, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(causal[0], noise["latents"])  # state 0 is the noise at t = 1000
    assert not torch.allclose(causal[-1, :, :2], whole[-1, :, :2], atol=1e-3)  # bidirectional block 0 sees the future
