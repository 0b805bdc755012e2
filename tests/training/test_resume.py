"""Exact resume: N steps in one go equal N/2 steps, a checkpoint, a fresh trainer and N/2 more; a run
killed with SIGKILL mid-training resumes from a complete checkpoint to the same weights; a failed save
leaves the previous checkpoint in force and no partial step folder."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from streamgen.checkpoints.io import load_safetensors, read_json
from streamgen.training import state as state_mod
from streamgen.training.cli import main as train_main
from streamgen.training.state import _optim_flat
from streamgen.training.trainer import Trainer

from .helpers import assert_same_state, state_of, tiny_config


def _snapshot(trainer: Trainer) -> dict:
    out = {f"net:{k}": state_of(m) for k, m in trainer.trainable.items()}
    out["ema"] = {k: v.clone() for k, v in trainer.ema.shadow.items()} if trainer.ema else {}
    for k, opt in trainer.optimizers.items():
        out[f"opt:{k}"] = _optim_flat(trainer.trainable[k], opt)[0]
    return out


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert_same_state(a[k], b[k], k)


@pytest.mark.parametrize("recipe, preset", [("teacher", "tiny"), ("ode_init", "tiny"), ("self_forcing", "tiny"),
                                            ("self_forcing", "tiny-world"), ("rollout_regression", "tiny-world")])
def test_resume_gives_the_uninterrupted_weights(recipe, preset, tmp_path):
    # The world preset's rollouts never reach its learnable audio sink (written to the caches without
    # grad), so that parameter has no optimiser state: resume must accept it, as the optimiser does.
    cfg = tiny_config(recipe, steps=4, extra=["train.batch=2", f"model={preset}"])
    full = Trainer(cfg, tmp_path / "full", progress=False)
    full.train()
    first = Trainer(cfg, tmp_path / "half", progress=False)
    first.train(until=2)
    first.save()
    del first
    resumed = Trainer(cfg, tmp_path / "resumed", progress=False)
    assert resumed.resume(tmp_path / "half") == 2
    resumed.train()
    assert resumed.step == 4
    _assert_same(_snapshot(full), _snapshot(resumed))
    # and the weights did move (the comparison is not between two untouched models)
    fresh = Trainer(cfg, tmp_path / "fresh", progress=False)
    assert any(not torch.equal(a, b) for a, b in zip(fresh.trainable["student"].state_dict().values(),
                                                       full.trainable["student"].state_dict().values()))


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    cfg = tiny_config("self_forcing", steps=4)
    trainer = Trainer(cfg, tmp_path, progress=False)
    trainer.train(until=2)
    trainer.save()
    trainer.train(until=3)
    real_save = state_mod.save_checkpoint

    def dies_on_critic(folder, *args, **kwargs):
        if folder.name == "critic":
            raise OSError("disk full (injected)")
        return real_save(folder, *args, **kwargs)

    monkeypatch.setattr(state_mod, "save_checkpoint", dies_on_critic)
    with pytest.raises(OSError, match="injected"):
        trainer.save()
    root = tmp_path / "checkpoints"
    assert read_json(root / "latest")["folder"] == "step_00000002"
    assert not (root / "step_00000003").exists() and (root / "step_00000003.partial").is_dir()
    assert not [p for p in root.rglob("*.tmp")], "a temporary file was left behind"
    monkeypatch.setattr(state_mod, "save_checkpoint", real_save)
    again = Trainer(cfg, tmp_path / "again", progress=False)
    assert again.resume(tmp_path) == 2
    trainer.save()  # a later successful save clears the stale partial folder
    assert not (root / "step_00000003.partial").exists() and read_json(root / "latest")["step"] == 3


def test_resume_after_sigkill(tmp_path):
    steps = 8
    extra = ["train.checkpoint_every=1", "train.keep_checkpoints=3"]
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "streamgen.training.cli", "self_forcing", "--out", str(out), "--no-progress"]
    for pair in _pairs(steps, extra):
        cmd += ["--set", pair]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    latest = out / "checkpoints" / "latest"
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            if latest.is_file() and read_json(latest)["step"] >= 2:
                break
            time.sleep(0.01)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    record = read_json(latest)
    assert 2 <= record["step"] < steps
    for folder in (out / "checkpoints").glob("step_*"):
        if folder.name.endswith(".partial"):
            continue
        for name in ("student", "critic", "ema"):  # every complete folder reads back whole
            assert load_safetensors(folder / name / "model.safetensors")
        assert load_safetensors(folder / "optim_student.safetensors") and (folder / "trainer.json").is_file()
    # Resume through the command line, which takes the run's saved config.
    assert train_main(["self_forcing", "--resume", str(out), "--out", str(tmp_path / "resumed"), "--no-progress",
                       "--set", "train.checkpoint_every=0"]) == 0  # saves only at the end
    full = Trainer(tiny_config("self_forcing", steps=steps), tmp_path / "full", progress=False)
    full.train()
    final = tmp_path / "resumed" / "checkpoints" / f"step_{steps:08d}"
    for name in ("student", "critic"):
        assert_same_state(state_of(full.trainable[name]), load_safetensors(final / name / "model.safetensors"), name)
    assert_same_state(full.ema.shadow, load_safetensors(final / "ema" / "model.safetensors"), "ema")
    optim = _optim_flat(full.trainable["student"], full.optimizers["student"])[0]
    assert_same_state(optim, load_safetensors(final / "optim_student.safetensors"), "optimiser")


def _pairs(steps: int, extra: list[str]) -> list[str]:
    from .helpers import FAST

    return FAST + [f"train.steps={steps}"] + extra


def test_optimiser_state_of_unknown_parameters_is_refused(tmp_path):
    import json

    from streamgen.checkpoints.io import save_safetensors
    from streamgen.training.state import load_optimizer_state

    a = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 1))
    opt = torch.optim.AdamW(a.parameters())
    a(torch.ones(2, 3)).sum().backward()
    opt.step()
    tensors, groups = _optim_flat(a, opt)
    save_safetensors(tensors, tmp_path / "optim.safetensors", {"groups": json.dumps(groups)})
    b = torch.nn.Sequential(torch.nn.Linear(3, 3))  # no parameter "1.weight" / "1.bias"
    with pytest.raises(ValueError, match=r"\['1.bias', '1.weight'\] \(2 parameters\) matches no parameter"):
        load_optimizer_state(b, torch.optim.AdamW(b.parameters()), tmp_path / "optim.safetensors")
