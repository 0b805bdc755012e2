"""scripts/gpu_train_world.sh, end to end on the CPU with tiny budgets: it encodes a real (tiny) Pong
dataset, runs ar_teacher (probe + resume), ode_init and self_forcing, and packs loadable weights."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from streamgen.checkpoints.folders import load_checkpoint_dir
from streamgen.decoders.audio_autoencoder import AudioAutoencoder
from streamgen.decoders.video_autoencoder import VideoAutoencoder
from streamgen.training.data.atari import build_dataset

REPO = Path(__file__).resolve().parents[2]


def _run_script(tmp_path, **env) -> Path:
    """The script on the CPU with a tiny real Pong dataset and untrained autoencoders; returns its OUT."""
    data = build_dataset("pong", tmp_path / "pong", episodes=2, steps_per_episode=48, seed=3, eval_episodes=1, progress=False)
    (tmp_path / "ae").mkdir()
    VideoAutoencoder().save(tmp_path / "ae" / "video_ae.safetensors")
    AudioAutoencoder().save(tmp_path / "ae" / "audio_ae.safetensors")
    out = tmp_path / "out"
    full = dict(os.environ, PYTHON=sys.executable, DEVICE="cpu", DATA=str(data), AE=str(tmp_path / "ae"), OUT=str(out),
                RUN=str(tmp_path / "run"), OMP_NUM_THREADS="1", **env)
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_train_world.sh")], env=full, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return out


@pytest.mark.slow
def test_gpu_script_runs_every_stage_on_the_cpu_and_packs_weights(tmp_path):
    out = _run_script(tmp_path, BUDGET_S="100", PROBE_S="8", TEACHER_BATCH="2", SF_BATCH="1", ODE_PAIRS="2", ODE_BATCH="2",
                      SF_CKPT_EVERY="2", TEACHER_SHARE="30", ODE_SHARE="30")
    progress = (out / "progress.txt").read_text()
    # A busy machine may spend the teacher's share in its probe: then the probe's checkpoint is kept.
    assert ("resuming to" in progress or "no time left to resume" in progress) and "done" in progress
    for name in ("teacher", "ode", "sf_a"):
        with tarfile.open(out / f"{name}.tar") as tar:
            tar.extractall(tmp_path / name, filter="data")
        weights = sorted((tmp_path / name / "checkpoints").glob("step_*/ema"))
        assert weights, f"{name}.tar holds no EMA weights"
        config, model = load_checkpoint_dir(weights[-1])
        assert config.name == "world-pong" and sum(p.numel() for p in model.parameters()) > 0
    with tarfile.open(out / "sf_critic.tar") as tar:  # the critic comes back too (the chain's third network)
        tar.extractall(tmp_path / "critic", filter="data")
    critic = sorted((tmp_path / "critic" / "checkpoints").glob("step_*/critic"))
    assert len(critic) == 1 and load_checkpoint_dir(critic[0])[0].name == "world-pong"
    teacher_steps = sorted((tmp_path / "teacher" / "checkpoints").glob("step_*"))
    assert len(teacher_steps) == 1  # the latest only: the probe's checkpoint was resumed, not packed


@pytest.mark.slow
def test_gpu_script_spends_the_budget_on_rollout_regression_from_a_given_student(tmp_path):
    import torch

    from streamgen.checkpoints.io import save_checkpoint
    from streamgen.pipeline import model_config, random_pipeline

    torch.manual_seed(0)
    pipe = random_pipeline(model_config("world"), device="cpu")
    save_checkpoint(tmp_path / "student", pipe.config, pipe.model)
    out = _run_script(tmp_path, BUDGET_S="45", RR_BATCH="1", SF_CKPT_EVERY="2", START_STUDENT=str(tmp_path / "student"),
                      FINAL_STAGE="rollout_regression", RR_FOCUS="8", RR_AUDIO_CHANGE="1")
    progress = (out / "progress.txt").read_text()
    assert "ar_teacher" not in progress and "rollout_regression" in progress
    assert not (out / "teacher.tar").exists() and not (out / "ode.tar").exists()
    with tarfile.open(out / "rr_a.tar") as tar:
        tar.extractall(tmp_path / "rr", filter="data")
    weights = sorted((tmp_path / "rr" / "checkpoints").glob("step_*/ema"))
    assert weights
    config, _ = load_checkpoint_dir(weights[-1])
    assert config.name == "world-pong"
    run = json.loads((tmp_path / "rr" / "run_config.json").read_text())["regression"]
    assert run["focus_weight"] == 8 and run["focus_cols"] == [0.85, 0.925] and run["audio_change_weight"] == 1


@pytest.mark.parametrize("env, message", [
    ({"FINAL_STAGE": "dmd"}, "FINAL_STAGE=dmd: use self_forcing or rollout_regression"),
    ({"START_STUDENT": "runs/x"}, "self_forcing with RR_DMD=0 needs TEACHER_INIT"),
    ({"START_STUDENT": "runs/x", "FINAL_STAGE": "rollout_regression", "RR_DMD": "1"}, "needs TEACHER_INIT"),
])
def test_gpu_script_refuses_inconsistent_stage_settings_before_any_work(tmp_path, env, message):
    full = dict(os.environ, PYTHON=sys.executable, OUT=str(tmp_path / "out"), RUN=str(tmp_path / "run"), **env)
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_train_world.sh")], env=full, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and message in proc.stderr
    assert not (tmp_path / "out").exists()  # nothing written
