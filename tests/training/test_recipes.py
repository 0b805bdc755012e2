"""Every recipe trains a few steps on the CPU (tiny preset) with finite losses; only the student and the
critic receive gradients; the teacher stays frozen; the CLI writes checkpoints and sample videos."""
from __future__ import annotations

import json
import math

import av
import pytest
import torch

from streamgen.checkpoints.folders import load_checkpoint_dir
from streamgen.training.cli import main as train_main
from streamgen.training.config import RunConfig, apply_overrides
from streamgen.training.ode import euler_grid
from streamgen.training.recipes import RECIPES, get_recipe
from streamgen.training.state import resolve_weights
from streamgen.training.trainer import Trainer

from .helpers import state_of, tiny_config


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_trains_with_finite_losses_and_frozen_teacher(recipe, tmp_path):
    trainer = Trainer(tiny_config(recipe, steps=2), tmp_path, progress=False)
    nets = trainer.objective.networks
    before = {k: state_of(m) for k, m in nets.items()}
    losses = trainer.train()
    assert trainer.step == 2
    numeric = {k: v for k, v in losses.items() if isinstance(v, float)}
    assert numeric and all(math.isfinite(v) for v in numeric.values()), losses
    for name, model in nets.items():
        params = list(model.parameters())
        after = state_of(model)
        changed = any(not torch.equal(before[name][k], after[k]) for k in after)
        if name == "teacher":
            assert all(not p.requires_grad and p.grad is None for p in params), "the teacher must stay frozen"
            assert not changed, "the teacher's weights moved"
        else:
            assert name in ("student", "critic")
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params), f"{name} got no gradient"
            assert changed, f"{name} was not updated"
    expected = {"teacher": {"student"}, "ar_teacher": {"student"}, "ode_init": {"student", "teacher"},
                "self_forcing": {"student", "critic", "teacher"}, "long_tuning": {"student", "critic", "teacher"},
                "rollout_regression": {"student"}}[recipe]
    assert set(nets) == expected
    assert set(trainer.optimizers) == expected - {"teacher"}


def test_long_tuning_rolls_past_the_window_and_switches_prompt(tmp_path):
    trainer = Trainer(tiny_config("long_tuning", steps=2, extra=["long.rollout_frames=10", "long.switch_prob=1.0"]), tmp_path,
                      progress=False)
    cfg = trainer.model_config
    batch = trainer.batch(0)
    assert batch["latents"].shape[1] == 10 > cfg.window_frames
    obj = trainer.objective
    assert obj.grad_from_block(10) == 2  # the judged window is the last 6 frames = blocks 2..4
    block, new = obj.prompt_switch(batch, 0)
    assert 1 <= block <= 2 and not torch.equal(new["text"], batch["text"])
    losses = trainer.train()
    assert math.isfinite(losses["dmd"]) and math.isfinite(losses["critic"])


def test_overrides_are_dotted_validated_and_name_the_bad_key():
    cfg = apply_overrides(get_recipe("self_forcing"), ["train.lr=3e-5", "train.betas=[0.0,0.99]", "dmd.guidance_scale=2.5",
                                                        "model_overrides.num_layers=1", "data.source=random-latents"])
    assert cfg.train.lr == 3e-5 and cfg.train.betas == (0.0, 0.99) and cfg.dmd.guidance_scale == 2.5
    assert cfg.model_overrides == {"num_layers": 1}
    assert RunConfig.from_dict(json.loads(cfg.to_json())) == cfg
    with pytest.raises(ValueError, match="lrr"):
        apply_overrides(cfg, ["train.lrr=1"])
    with pytest.raises(ValueError, match="critic_steps=0"):
        apply_overrides(cfg, ["dmd.critic_steps=0"])
    with pytest.raises(KeyError, match="nope"):
        get_recipe("nope")


def test_recipe_defaults_follow_self_forcing():
    sf = get_recipe("self_forcing")
    assert (sf.train.lr, sf.dmd.critic_lr, sf.train.betas, sf.train.weight_decay, sf.train.grad_clip) == (2e-6, 4e-7, (0.0, 0.999), 0.01, 10.0)
    assert (sf.dmd.critic_steps, sf.train.ema_decay, sf.train.ema_start, sf.dmd.min_t, sf.dmd.max_t) == (5, 0.99, 200, 20.0, 980.0)


def test_teacher_grid_hits_the_student_timesteps():
    steps = (1000.0, 937.5, 833.3333333333334, 625.0)
    grid, marks = euler_grid(steps, 12, 5.0)
    assert len(grid) == 4 * 12 + 1 and grid[-1] == 0.0
    assert [grid[m] for m in marks] == list(steps)
    assert all(a > b for a, b in zip(grid[:-1], grid[1:]))


def _frames(path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_cli_chain_teacher_ode_self_forcing(tmp_path):
    common = ["--no-progress", "--steps", "2", "--set", "train.sample_every=2", "--set", "train.sample_blocks=2",
              "--set", "ode.num_pairs=2", "--set", "ode.substeps=2", "--set", "train.log_every=1"]
    assert train_main(["teacher", "--out", str(tmp_path / "t"), "--data", "random-latents", *common]) == 0
    assert train_main(["ode_init", "--out", str(tmp_path / "o"), "--set", f"init.teacher={tmp_path / 't'}",
                       "--set", f"init.student={tmp_path / 't'}", *common]) == 0
    assert train_main(["self_forcing", "--out", str(tmp_path / "s"), "--set", f"init.teacher={tmp_path / 't'}",
                       "--set", f"init.student={tmp_path / 'o'}", *common]) == 0
    for run in ("t", "o", "s"):
        step = tmp_path / run / "checkpoints" / "step_00000002"
        config, model = load_checkpoint_dir(resolve_weights(tmp_path / run))  # EMA (or student) weights, a streamgen checkpoint
        assert (step / "student" / "model.safetensors").is_file() and (step / "ema").is_dir() == (run != "o")
        assert config.name == "tiny" and sum(p.numel() for p in model.parameters()) > 0
        sample = tmp_path / run / "samples" / "step_00000002.mp4"
        assert _frames(sample) == 2 * config.frames_per_block * config.temporal_upsample
        log = [json.loads(line) for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]
        assert [r["step"] for r in log] == [1, 2] and all(r["samples_per_s"] > 0 and "eta_s" in r for r in log)
    assert (tmp_path / "s" / "checkpoints" / "step_00000002" / "critic" / "model.safetensors").is_file()


def test_world_preset_trains_every_recipe_with_audio_and_actions(tmp_path):
    """The same code trains the joint audio-video, action-conditioned preset: the audio stream is
    generated and judged too (its head receives gradient), actions reach the action modules."""
    for recipe in sorted(RECIPES):
        trainer = Trainer(tiny_config(recipe, steps=1, extra=["model=tiny-world", "dmd.critic_steps=1"]), tmp_path / recipe, progress=False)
        batch = trainer.batch(0)
        assert {"audio", "keyboard", "mouse"} <= set(batch)
        losses = trainer.train()
        assert all(math.isfinite(v) for v in losses.values() if isinstance(v, float)), (recipe, losses)
        student = trainer.objective.networks["student"]
        assert student.audio.head.weight.grad is not None and student.audio.head.weight.grad.abs().sum() > 0, recipe
        action_grads = [p.grad for n, p in student.named_parameters() if "action" in n]
        assert action_grads and all(g is not None for g in action_grads), f"{recipe}: the action modules were skipped"
        if recipe not in ("teacher", "ar_teacher"):  # from scratch the zero-initialised heads block gradient at step 1
            assert any(g.abs().sum() > 0 for g in action_grads), recipe


def test_latent_folder_source_cuts_clips_within_episodes(tmp_path):
    from streamgen.checkpoints.io import save_safetensors
    from streamgen.presets import preset
    from streamgen.training.sources import LatentFolder

    cfg = preset("tiny")
    data = tmp_path / "latents"
    for ep in range(2):
        t = 10
        lat = torch.arange(t, dtype=torch.float32).view(t, 1, 1, 1).expand(t, 4, 4, 4) + 100 * ep  # frame index in every value
        first = torch.zeros(t, dtype=torch.bool)
        first[5] = True  # a new game starts at frame 5
        save_safetensors({"latents": lat.contiguous(), "first": first, "text": torch.randn(cfg.text_len, cfg.text_dim),
                          "actions": torch.arange(t * 4).view(t * 4, 1).float()}, data / f"ep_{ep}.safetensors")
    src = LatentFolder(data, cfg, num_frames=4, batch=3, seed=0)
    assert [s for i, s in src.starts if i == 0] == [0, 1, 5, 6]  # 4-frame clips inside frames 0-4 and 5-9
    for step in range(5):
        batch = src.batch_at(step)
        assert batch["latents"].shape == (3, 4, 4, 4, 4) and batch["text"].shape == (3, cfg.text_len, cfg.text_dim)
        frames = batch["latents"][:, :, 0, 0, 0] % 100  # [B, 4]
        assert torch.equal(frames - frames[:, :1], torch.arange(4.0).expand(3, 4))  # consecutive frames
        assert bool(((frames[:, 0] < 5) & (frames[:, -1] >= 5)).logical_not().all())  # no clip crosses a new game
        assert torch.equal(batch["actions"][:, :, 0], frames[:, :1] * 4 + torch.arange(16.0))  # raw rate, r = 4
    trainer = Trainer(tiny_config("teacher", steps=2, extra=[f"data.source={data}", "data.num_frames=4"]), tmp_path / "run", progress=False)
    assert math.isfinite(trainer.train()["loss"])


def test_cli_prints_config_and_rejects_bad_overrides(capsys):
    assert train_main(["self_forcing", "--print-config", "--set", "dmd.guidance_scale=2", "--steps", "7"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["dmd"]["guidance_scale"] == 2 and printed["train"]["steps"] == 7 and printed["recipe"] == "self_forcing"
    assert train_main(["teacher", "--set", "train.nope=1"]) == 2
    assert "nope" in capsys.readouterr().err


def test_world_latent_folder_with_audio_actions_and_bookkeeping(tmp_path):
    """The episode format of the world data (video and audio latents, keyboard windows, game starts, raw
    emulator actions the model does not take) trains the joint, action-conditioned preset."""
    from streamgen.checkpoints.io import save_safetensors
    from streamgen.presets import preset

    cfg = preset("tiny-world")
    rows, keys = cfg.actions.window_frames * cfg.temporal_upsample, len(cfg.actions.keys)
    per_frame = cfg.audio_frames_per_block // cfg.frames_per_block
    g = torch.Generator().manual_seed(0)
    for ep in range(2):
        t = 12
        first = torch.zeros(t, dtype=torch.bool)
        first[0] = True
        save_safetensors({"latents": torch.randn(t, 4, 4, 4, generator=g), "audio": torch.randn(t * per_frame, 8, generator=g),
                          "keyboard": (torch.rand(t, rows, keys, generator=g) < 0.3).float(), "first": first,
                          "ale_actions": torch.randint(0, 6, (t * cfg.temporal_upsample,), generator=g).to(torch.int16)},
                         tmp_path / "latents" / f"ep_{ep}.safetensors")
    for recipe in ("teacher", "self_forcing"):
        trainer = Trainer(tiny_config(recipe, steps=1, extra=["model=tiny-world", f"data.source={tmp_path / 'latents'}",
                                                               "dmd.critic_steps=1"]), tmp_path / recipe, progress=False)
        batch = trainer.batch(0)
        assert batch["audio"].shape[1] == batch["latents"].shape[1] * per_frame and "ale_actions" in batch
        losses = trainer.train()
        assert all(math.isfinite(v) for v in losses.values() if isinstance(v, float)), losses
