"""The learning-rate schedule (warm-up, cosine) as the optimisers see it, resume across it, the
wall-clock stop (train.time_limit_s), and the motion-weighted flow-matching loss."""
from __future__ import annotations

import json
import math

import pytest
import torch

from streamgen.checkpoints.io import read_json
from streamgen.training.config import TrainConfig
from streamgen.training.modalities import AUDIO, VIDEO
from streamgen.training.losses import flow_matching_loss, motion_weights, streams_flow_loss
from streamgen.training.trainer import Trainer, lr_factor

from .helpers import assert_same_state, tiny_config


def test_lr_factor_warms_up_then_follows_the_cosine_to_the_floor():
    t = TrainConfig(steps=110, warmup=10, lr_schedule="cosine", min_lr_ratio=0.1)
    assert lr_factor(t, 0) == pytest.approx(0.1) and lr_factor(t, 9) == pytest.approx(1.0)
    assert lr_factor(t, 10) == pytest.approx(1.0)
    assert lr_factor(t, 60) == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the decay
    assert lr_factor(t, 110) == pytest.approx(0.1) and lr_factor(t, 500) == pytest.approx(0.1)
    values = [lr_factor(t, s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # never rises after the warm-up
    assert lr_factor(TrainConfig(steps=5), 3) == 1.0  # constant by default


@pytest.mark.parametrize("bad", ["train.lr_schedule=linear", "train.warmup=-1", "train.min_lr_ratio=2", "train.time_limit_s=-5"])
def test_bad_schedule_settings_name_the_value(bad):
    with pytest.raises(ValueError, match=bad.split(".")[1].split("=")[0]):
        tiny_config("teacher", extra=[bad])


def test_optimisers_use_the_scheduled_rate_and_resume_keeps_it(tmp_path):
    extra = ["train.warmup=2", "train.lr_schedule=cosine", "train.min_lr_ratio=0.2", "train.lr=1e-3", "dmd.critic_lr=4e-3"]
    cfg = tiny_config("self_forcing", steps=4, extra=extra)
    full = Trainer(cfg, tmp_path / "full", progress=False)
    seen: list[tuple[float, float]] = []
    original = full.update

    def spy(name, loss):
        original(name, loss)
        seen.append((name, full.optimizers[name].param_groups[0]["lr"], full.step))

    full.update = spy
    full.train()
    for name, lr, step in seen:
        base = 1e-3 if name == "student" else 4e-3
        assert lr == pytest.approx(base * lr_factor(cfg.train, step)), (name, step)
    assert {round(lr, 9) for n, lr, _ in seen if n == "student"} != {1e-3}  # the rate did change

    half = Trainer(cfg, tmp_path / "half", progress=False)
    half.train(until=2)
    half.save()
    resumed = Trainer(cfg, tmp_path / "resumed", progress=False)
    resumed.resume(tmp_path / "half")
    resumed.train()
    for k in full.trainable:
        assert_same_state(full.trainable[k].state_dict(), resumed.trainable[k].state_dict(), k)


def test_time_limit_stops_with_a_checkpoint_that_resumes(tmp_path):
    cfg = tiny_config("teacher", steps=10_000, extra=["train.time_limit_s=0.5", "train.checkpoint_every=0"])
    trainer = Trainer(cfg, tmp_path, progress=False)
    trainer.train()
    assert 0 < trainer.step < 10_000
    latest = read_json(tmp_path / "checkpoints" / "latest")
    assert latest["step"] == trainer.step
    stop = [r for r in map(json.loads, (tmp_path / "log.jsonl").read_text().splitlines()) if r.get("stopped")]
    assert stop and stop[-1]["stopped"] == "time_limit_s" and stop[-1]["seconds"] >= 0.5
    again = Trainer(cfg, tmp_path / "again", progress=False)
    assert again.resume(tmp_path) == trainer.step


def test_motion_weights_single_out_what_moves():
    video = torch.zeros(2, 4, 3, 8, 8)  # [B, F, C, H, W]
    for f in range(4):
        video[:, f, :, 2, f] = 1.0  # an object stepping one cell right per frame
    w = motion_weights(video, strength=2.0)
    assert w.shape == (2, 4, 1, 8, 8)
    still = torch.ones(8, 8, dtype=torch.bool)
    still[2, :5] = False
    assert torch.all(w[:, :, 0][:, :, still] == 1.0)  # cells that never change keep weight 1
    assert w[0, 2, 0, 2, 1] > 1.0 and w[0, 2, 0, 2, 2] > 1.0  # where it left and where it arrived
    assert w[0, 0, 0, 2, 0] == w[0, 1, 0, 2, 0]  # the first frame borrows the change to the second
    assert torch.equal(motion_weights(torch.zeros(1, 1, 3, 4, 4), 5.0), torch.ones(1, 1, 1, 4, 4))
    capped = motion_weights(video, strength=1.0, cap=2.0)
    assert capped.max() <= 3.0


def test_weighted_flow_loss_keeps_the_plain_loss_for_uniform_weights_and_moves_with_them():
    g = torch.Generator().manual_seed(0)
    pred, x0, noise = (torch.randn(2, 4, 3, 8, 8, generator=g) for _ in range(3))
    plain = flow_matching_loss(pred, x0, noise)
    assert torch.allclose(flow_matching_loss(pred, x0, noise, torch.full((2, 4, 1, 8, 8), 3.0)), plain)
    w = torch.ones(2, 4, 1, 8, 8)
    w[..., :4, :] = 5.0
    err = ((pred - (noise - x0)) ** 2).mean(dim=2, keepdim=True)  # [B, F, 1, H, W]
    expected = (err * w).sum() / w.sum()
    assert math.isclose(float(flow_matching_loss(pred, x0, noise, w)), float(expected), rel_tol=1e-5)
    streams = {VIDEO: x0, AUDIO: torch.randn(2, 16, 4, generator=g)}
    preds = {VIDEO: pred, AUDIO: torch.randn(2, 16, 4, generator=g)}
    noises = {VIDEO: noise, AUDIO: torch.randn(2, 16, 4, generator=g)}
    assert float(streams_flow_loss(preds, streams, noises, motion_weight=0.0)) == pytest.approx(
        float(flow_matching_loss(pred, x0, noise) + flow_matching_loss(preds[AUDIO], streams[AUDIO], noises[AUDIO])))
    assert float(streams_flow_loss(preds, streams, noises, motion_weight=3.0)) != pytest.approx(
        float(streams_flow_loss(preds, streams, noises)))


def test_ar_teacher_trains_with_motion_weight(tmp_path):
    trainer = Trainer(tiny_config("ar_teacher", steps=2, extra=["train.motion_weight=3"]), tmp_path, progress=False)
    losses = trainer.train()
    assert math.isfinite(losses["loss"])


@pytest.mark.slow
def test_compiled_networks_train_like_eager_ones(tmp_path):
    """train.compile: the same losses and weights (to float tolerance) as the eager run (~1 min of compiling)."""
    runs = {}
    for flag in (False, True):
        trainer = Trainer(tiny_config("ar_teacher", steps=3, extra=[f"train.compile={str(flag).lower()}"]), tmp_path / str(flag),
                          progress=False)
        assert hasattr(trainer.trainable["student"].forward_teacher_forcing, "_torchdynamo_orig_callable") == flag
        losses = [trainer.objective.step(i)["loss"] for i in range(3)]
        runs[flag] = losses, {k: v.detach().clone() for k, v in trainer.trainable["student"].state_dict().items()}
    assert runs[True][0] == pytest.approx(runs[False][0], rel=1e-4)
    for k, v in runs[False][1].items():
        torch.testing.assert_close(runs[True][1][k], v, atol=1e-5, rtol=1e-4)
