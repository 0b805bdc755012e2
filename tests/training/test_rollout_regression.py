"""``rollout_regression``: the student is primed with the clip's real first blocks and generates the rest;
only those real blocks reach it (the frames it is judged against never do); the loss is the generated
streams' error against the real ones; it learns a continuation that the context determines."""
from __future__ import annotations

import json
import math

import pytest
import torch

from streamgen.checkpoints.io import save_safetensors
from streamgen.training.losses import rollout_regression_loss
from streamgen.training.trainer import Trainer

from .helpers import tiny_config


def _generate(trainer, batch, exit_index=2):
    trainer.generators["local"].manual_seed(123)  # the same noise for every call
    generated, target = trainer.objective.rollout(batch, exit_index, grad=False)
    return generated, target


@pytest.mark.parametrize("preset", ["tiny", "tiny-world"])
def test_only_the_real_context_reaches_the_student(preset, tmp_path):
    trainer = Trainer(tiny_config("rollout_regression", extra=[f"model={preset}", "regression.context_blocks=1"]),
                      tmp_path, progress=False)
    cfg = trainer.model_config
    n = cfg.frames_per_block
    batch = trainer.batch(0)
    f = batch["latents"].shape[1]
    generated, target = _generate(trainer, batch)
    assert generated["latents"].shape[1] == f - n and set(generated) == set(target)
    torch.testing.assert_close(target["latents"], batch["latents"][:, n:], rtol=0, atol=0)
    # Other real frames after the context: the same generation (the answer is never an input).
    later = dict(batch, latents=torch.cat([batch["latents"][:, :n], torch.randn_like(batch["latents"][:, n:])], 1))
    if "audio" in batch:
        na = cfg.audio_frames_per_block
        later["audio"] = torch.cat([batch["audio"][:, :na], torch.randn_like(batch["audio"][:, na:])], 1)
    again, _ = _generate(trainer, later)
    for k in generated:
        torch.testing.assert_close(again[k], generated[k], rtol=0, atol=0)
    # Another real context: another generation.
    other = dict(batch, latents=torch.cat([batch["latents"][:, :n] + 1.0, batch["latents"][:, n:]], 1))
    moved, _ = _generate(trainer, other)
    assert (moved["latents"] - generated["latents"]).abs().max() > 1e-3


def test_the_loss_is_the_error_of_the_generated_blocks(tmp_path):
    trainer = Trainer(tiny_config("rollout_regression", extra=["regression.context_blocks=2"]), tmp_path, progress=False)
    batch = trainer.batch(0)
    generated, target = _generate(trainer, batch)
    want = float(((generated["latents"] - batch["latents"][:, 2 * trainer.model_config.frames_per_block :]) ** 2).mean())
    assert float(rollout_regression_loss(generated, target)) == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match="context_blocks=3 leaves no block"):
        Trainer(tiny_config("rollout_regression", extra=["regression.context_blocks=3"]), tmp_path / "b",
                progress=False).train()


def _phase_episodes(folder, count=6, frames=48):
    """Each episode: channel 0 a travelling wave whose phase differs per episode, so the context fixes the rest."""
    g = torch.Generator().manual_seed(0)
    for ep in range(count):
        phase = float(torch.rand(1, generator=g)) * 6.28
        t = torch.arange(frames).float()
        lat = 0.1 * torch.randn(frames, 4, 4, 4, generator=g)
        lat[:, 0] = torch.sin(phase + 0.7 * t)[:, None, None] * 1.5
        save_safetensors({"latents": lat}, folder / f"ep_{ep}.safetensors")


def test_rollout_regression_learns_a_continuation_the_context_determines(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _phase_episodes(data)
    run = tmp_path / "run"
    Trainer(tiny_config("rollout_regression", steps=120, extra=[f"data.source={data}", "train.batch=4", "train.lr=2e-3",
                                                               "regression.context_blocks=1", "train.log_every=1"]),
            run, progress=False).train()
    losses = [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 120 and all(math.isfinite(x) for x in losses)
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.5 * first, (first, last)


def test_with_dmd_the_critic_learns_and_the_teacher_stays_frozen(tmp_path):
    trainer = Trainer(tiny_config("rollout_regression", steps=2, extra=["model=tiny-world", "regression.dmd_weight=0.5",
                                                                        "regression.context_blocks=1"]),
                      tmp_path, progress=False)
    nets = trainer.objective.networks
    assert set(nets) == {"student", "critic", "teacher"} and set(trainer.optimizers) == {"student", "critic"}
    teacher_before = {k: v.clone() for k, v in nets["teacher"].state_dict().items()}
    losses = trainer.train()
    assert all(math.isfinite(losses[k]) for k in ("loss", "regression", "dmd", "critic")), losses
    assert losses["loss"] != losses["regression"]  # the DMD term is in the student's loss
    for name in ("student", "critic"):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in nets[name].parameters()), name
    assert all(p.grad is None and not p.requires_grad for p in nets["teacher"].parameters())
    assert all(torch.equal(teacher_before[k], v) for k, v in nets["teacher"].state_dict().items())
