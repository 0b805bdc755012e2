"""Training output is a model: `streamgen train` prints the folder to load, and generate / bench / serve
take a run folder or a step folder, loading its EMA weights (the student's when the run kept none)."""
from __future__ import annotations

import shutil
import subprocess
import sys

import av
import torch

from streamgen.checkpoints.io import load_safetensors
from streamgen.checkpoints.run_folder import model_folder, resolve_checkpoint
from streamgen.pipeline import load_pipeline

from .helpers import run_cli


def test_a_trained_run_folder_streams_its_ema_weights(tmp_path):
    run = tmp_path / "run"
    train = subprocess.run([sys.executable, "-m", "streamgen.training.cli", "teacher", "--steps", "2", "--out", str(run),
                            "--no-progress", "--set", "train.checkpoint_every=0", "--set", "train.ema_start=0"],
                           capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stderr
    step = resolve_checkpoint(run)
    printed = train.stdout.strip().splitlines()[-1]
    assert printed == str(step / "ema")  # the loadable folder, on stdout
    assert f"streamgen generate --model {run}" in train.stderr

    out = tmp_path / "run.mp4"
    gen = run_cli("generate", "--model", str(run), "--blocks", "2", "-o", str(out))
    assert gen.returncode == 0, gen.stderr
    assert f"loading {step / 'ema'}" in gen.stderr
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 2 * 2  # tiny: 2 frames per block

    # A step folder loads the same EMA weights as the run folder; they are the file's, not the student's.
    ema = load_safetensors(step / "ema" / "model.safetensors")
    student = load_safetensors(step / "student" / "model.safetensors")
    assert any(not torch.equal(ema[k], student[k]) for k in ema)  # two steps of training moved them apart
    for folder in (run, step, run / "checkpoints"):
        weights = load_pipeline(str(folder), device="cpu").model.state_dict()
        assert all(torch.equal(weights[k], ema[k].to(weights[k].dtype)) for k in ema), folder

    # A run that kept no EMA: the student's weights.
    no_ema = tmp_path / "no_ema"
    shutil.copytree(step, no_ema)
    shutil.rmtree(no_ema / "ema")
    assert model_folder(no_ema) == no_ema / "student"
    weights = load_pipeline(str(no_ema), device="cpu").model.state_dict()
    assert all(torch.equal(weights[k], student[k].to(weights[k].dtype)) for k in student)
