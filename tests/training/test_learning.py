"""The recipe chain learns: on synthetic episodes whose latents carry a constant channel offset and a
spatial gradient, teacher -> ode_init -> self_forcing gives a causal student whose streamed samples
(through a real Session) reproduce those statistics, where a random student does not. Slow (about a
minute and a half on two cores)."""
from __future__ import annotations

import pytest
import torch

import streamgen
from streamgen.checkpoints.io import save_safetensors
from streamgen.training.config import apply_overrides
from streamgen.training.recipes import get_recipe
from streamgen.training.trainer import Trainer


def _episodes(folder, count=8, frames=64):
    g = torch.Generator().manual_seed(0)
    for ep in range(count):
        t = torch.arange(frames).float()
        lat = torch.zeros(frames, 4, 4, 4)
        lat[:, 0] = 1.5  # constant offset
        lat[:, 1] = torch.sin(float(torch.rand(1, generator=g)) * 6.28 + 0.4 * t)[:, None, None]  # oscillation in time
        lat[:, 2] = torch.linspace(-1, 1, 4)[None, :, None]  # gradient over rows
        lat[:, 3] = 0.3 * torch.randn(frames, 4, 4, generator=g)
        save_safetensors({"latents": lat}, folder / f"ep_{ep}.safetensors")


def _streamed(weights, seeds=4, blocks=6) -> torch.Tensor:
    pipe = streamgen.load_pipeline(str(weights), device="cpu")
    out = []
    for seed in range(seeds):
        session = pipe.start(seed=seed)
        for _ in range(blocks):
            session.step()
        out.append(torch.cat(session.sink_latents + list(session.recent_latents), dim=1)[0])  # [F, C, H, W]
    return torch.stack(out)  # [S, F, C, H, W]


def _run(recipe, out, sets):
    cfg = apply_overrides(get_recipe(recipe), ["train.checkpoint_every=0", "train.log_every=100000"] + sets)
    trainer = Trainer(cfg, out, progress=False)
    trainer.train()
    return trainer


def _error(x: torch.Tensor) -> float:
    rows = x[:, :, 2].mean(dim=(0, 1, 3))  # [H]
    return float((x[:, :, 0].mean() - 1.5).abs() + (rows - torch.linspace(-1, 1, 4)).abs().mean())


@pytest.mark.slow
def test_chain_learns_the_data_statistics(tmp_path):
    data = tmp_path / "data"
    _episodes(data)
    common = [f"data.source={data}", "train.batch=8", "train.lr=1e-3"]
    _run("teacher", tmp_path / "teacher", common + ["train.steps=500", "train.ema_start=100"])
    teacher = tmp_path / "teacher" / "checkpoints" / "step_00000500" / "ema"
    _run("ode_init", tmp_path / "ode", common + ["train.steps=500", f"init.teacher={teacher}", f"init.student={teacher}",
                                               "ode.num_pairs=128", "ode.guidance_scale=1"])
    ode = tmp_path / "ode" / "checkpoints" / "step_00000500" / "student"
    _run("self_forcing", tmp_path / "sf", [f"data.source={data}", "train.batch=4", "train.lr=1e-4", "dmd.critic_lr=1e-4",
                                           "dmd.guidance_scale=1", "train.ema_start=50", "train.steps=200",
                                           f"init.teacher={teacher}", f"init.student={ode}"])
    sf = tmp_path / "sf" / "checkpoints" / "step_00000200" / "ema"
    random_err, ode_err, sf_err = _error(_streamed("tiny")), _error(_streamed(ode)), _error(_streamed(sf))
    assert random_err > 1.0, random_err
    assert ode_err < 0.2, ode_err
    assert sf_err < 0.2, sf_err  # DMD keeps (and in our runs tightens) what the ODE student learned
