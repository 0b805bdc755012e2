"""Two gloo processes under torchrun train a few Self-Forcing steps; both ranks end with identical
weights (each rank hashes its own copy at the checkpoint), the ranks saw different data, and FSDP2
reaches the same weights as the replicated strategy and resumes exactly."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from streamgen.checkpoints.io import load_safetensors, read_json

from .helpers import FAST


def _torchrun(out, parallel: str, steps: int = 3, extra: list[str] = ()) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "streamgen.training.cli", "self_forcing", "--out", str(out), "--no-progress"]
    for pair in FAST + [f"train.steps={steps}", f"parallel={parallel}", "train.batch=1", "train.log_every=1"]:
        cmd += ["--set", pair]
    cmd += list(extra)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return read_json(out / "checkpoints" / f"step_{steps:08d}" / "trainer.json")


def _single(out, steps: int = 3) -> dict:
    from streamgen.training.trainer import Trainer

    from .helpers import tiny_config

    trainer = Trainer(tiny_config("self_forcing", steps=steps), out, progress=False)
    trainer.train()
    return {k: v.detach().clone() for k, v in trainer.trainable["student"].state_dict().items()}


def test_two_gloo_ranks_end_identical(tmp_path):
    record = _torchrun(tmp_path / "ddp", "ddp")
    hashes = record["rank_weight_hashes"]
    assert record["world"] == 2 and len(hashes) == 2 and hashes[0] == hashes[1], hashes
    # Two ranks average two different batches: the result differs from one process on rank 0's data.
    step = tmp_path / "ddp" / "checkpoints" / "step_00000003"
    two = load_safetensors(step / "student" / "model.safetensors")
    one = _single(tmp_path / "single")
    assert any(not torch.equal(two[k], one[k]) for k in one)
    assert (step / "rng_rank0.safetensors").is_file() and (step / "rng_rank1.safetensors").is_file()


@pytest.mark.slow
def test_fsdp2_matches_replicated_and_resumes_exactly(tmp_path):
    ddp = _torchrun(tmp_path / "ddp", "ddp", steps=4)
    fsdp = _torchrun(tmp_path / "fsdp", "fsdp", steps=4)
    assert fsdp["rank_weight_hashes"][0] == fsdp["rank_weight_hashes"][1]
    _torchrun(tmp_path / "half", "fsdp", steps=2)
    _torchrun(tmp_path / "resumed", "fsdp", steps=4, extra=["--resume", str(tmp_path / "half")])
    for part in ("student", "critic", "ema"):
        a = load_safetensors(tmp_path / "ddp" / "checkpoints" / "step_00000004" / part / "model.safetensors")
        b = load_safetensors(tmp_path / "fsdp" / "checkpoints" / "step_00000004" / part / "model.safetensors")
        c = load_safetensors(tmp_path / "resumed" / "checkpoints" / "step_00000004" / part / "model.safetensors")
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
            assert torch.equal(b[k], c[k]), f"{part}.{k}: FSDP resume differs"
    assert ddp["step"] == fsdp["step"] == 4
