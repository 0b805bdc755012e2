"""Small configs for the training tests: tiny preset, batch 1-2, a few steps."""
from __future__ import annotations

import torch

from streamgen.training.config import apply_overrides
from streamgen.training.recipes import get_recipe

FAST = [
    "train.checkpoint_every=0", "train.log_every=1000", "train.ema_start=0", "train.ema_decay=0.9",
    "ode.num_pairs=2", "ode.substeps=2", "dmd.critic_steps=2", "long.rollout_frames=8",
    "train.lr=1e-3", "dmd.critic_lr=1e-3",
]


def tiny_config(recipe: str, steps: int = 3, extra: list[str] | None = None):
    return apply_overrides(get_recipe(recipe), FAST + [f"train.steps={steps}"] + list(extra or []))


def state_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for k in a:
        assert torch.equal(a[k], b[k]), f"{what}: {k} differs by {float((a[k].float() - b[k].float()).abs().max())}"
