"""One block loop: the streaming Session and the Self-Forcing training rollout both generate through
``streamgen.block_loop.run_block``; neither writes its own denoise / refill / keep-window loop."""
from __future__ import annotations

import ast
from pathlib import Path

import torch

import streamgen
import streamgen.session
import streamgen.training.rollout
from streamgen import block_loop
from streamgen.pipeline import load_pipeline
from streamgen.training.conditioning import make_cond
from streamgen.training.rollout import recache, self_forcing_rollout

# What only the block loop may call or write: the sampler's update rules and the keep-window formula.
LOOP_PRIMITIVES = {"x0_and_renoise", "predict_x0", "add_noise", "euler_step", "audio_cache_frames"}


def _names_used(module) -> set[str]:
    tree = ast.parse(Path(module.__file__).read_text())
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    names |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    return names


def test_neither_call_site_touches_the_loop_primitives():
    for module in (streamgen.session, streamgen.training.rollout):
        used = _names_used(module) & LOOP_PRIMITIVES
        assert not used, f"{module.__name__} re-implements part of the block loop: it uses {sorted(used)}"
    assert LOOP_PRIMITIVES & _names_used(block_loop), "the block loop no longer uses the sampler's rules"


def test_session_and_rollout_both_step_through_run_block(monkeypatch):
    """Spy on ``run_block``: every block of a session and of a rollout goes through it, and replacing its
    result changes what both produce (so neither computes the block on the side)."""
    pipe = load_pipeline("tiny", device="cpu")
    calls: list[str] = []
    real = block_loop.run_block

    def spy(forward, noise, timesteps, **kw):
        calls.append("grad" if kw.get("grad") else "plain")
        return {s: x * 0 + 0.25 for s, x in real(forward, noise, timesteps, **kw).items()}

    monkeypatch.setattr(block_loop, "run_block", spy)
    session = pipe.start(seed=1, prompt="a red ball")
    for _ in range(2):
        session.step()
    assert calls == ["plain", "plain"]
    kept = torch.cat(session.sink_latents + list(session.recent_latents), dim=1)
    assert torch.all(kept == 0.25)

    cfg = pipe.config
    batch = {"latents": torch.zeros(1, 2 * cfg.frames_per_block, 1), "text": pipe.text_encoder("a red ball")}
    roll = self_forcing_rollout(pipe.model, make_cond(pipe.model, batch), batch=1, num_frames=2 * cfg.frames_per_block,
                                timesteps=pipe.timesteps, exit_index=0, noise_generator=torch.Generator().manual_seed(1))
    assert calls[2:] == ["grad", "grad"]
    assert torch.all(roll.latents == 0.25)


def test_gradient_gating_is_the_only_difference():
    """The loop on a toy forward: without gating every step runs without grad; with ``exit_index`` and
    ``grad`` only the exit step's forward carries grad, the later steps are skipped, and the noise is
    drawn in the same order (one block draw, one per step that does not exit, one for the refill)."""
    w = torch.tensor(0.5, requires_grad=True)
    seen: list[tuple[float, bool]] = []

    def forward(xs, t):
        seen.append((t, torch.is_grad_enabled()))
        return {s: x * w for s, x in xs.items()}

    draws = []

    def noise():
        draws.append(len(draws))
        return {"video": torch.full((1, 2), float(len(draws)))}

    steps = (1000.0, 750.0, 500.0, 250.0)
    with torch.enable_grad():
        x0 = block_loop.run_block(forward, noise, steps, context_noise=0.0)
        assert [g for _, g in seen] == [False] * 5 and not x0["video"].requires_grad and len(draws) == 4
        seen.clear(), draws.clear()
        x0 = block_loop.run_block(forward, noise, steps, context_noise=100.0, exit_index=1, grad=True)
    assert seen == [(1000.0, False), (750.0, True), (100.0, False)]
    assert x0["video"].requires_grad and len(draws) == 3


def test_keep_window_is_one_formula():
    """The session's kept clean frames and the rollout's re-cache both follow ``block_loop.keep_frames``."""
    for name in ("tiny", "tiny-world"):
        pipe = load_pipeline(name, device="cpu")
        session = pipe.start(seed=0)
        assert session.recent_latents.maxlen == block_loop.keep_frames(pipe.config)
    assert recache.__module__ == "streamgen.training.rollout"
    assert "keep_frames" in _names_used(streamgen.training.rollout)
