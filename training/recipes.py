"""Recipes: each function returns the :class:`RunConfig` of one training stage.

The sequence (docs/training.md): ``teacher`` -> (optional ``ar_teacher``) -> ``ode_init`` ->
``self_forcing`` -> (optional ``long_tuning``). Each stage names the checkpoints of the previous ones in
``init.*`` (``--set init.teacher=runs/teacher/checkpoints/latest``).
"""
from __future__ import annotations

from typing import Callable

from streamgen.training.config import DMDConfig, RunConfig, TrainConfig
from streamgen.training.objectives import ARTeacherObjective, ODEObjective, Objective, SelfForcingObjective, TeacherObjective
from streamgen.training.objectives_rollout import LongTuningObjective, RolloutRegressionObjective


def teacher() -> RunConfig:
    """Bidirectional flow-matching DiT on clips of F latent frames, text dropped 10 % of the time (CFG)."""
    return RunConfig(recipe="teacher", train=TrainConfig(lr=1e-4, betas=(0.9, 0.999), steps=20000, ema_start=1000))


def ar_teacher() -> RunConfig:
    """Autoregressive teacher by teacher forcing: ``[clean | noisy]`` under the teacher-forcing mask, a
    random timestep per block. Its ODE map is frame-level consistent with a causal student (Causal Forcing)."""
    return RunConfig(recipe="ar_teacher", train=TrainConfig(lr=1e-4, steps=20000, ema_start=1000))


def ode_init() -> RunConfig:
    """Regression of the causal student onto teacher trajectories at the student's own timesteps
    (CausVid / SF: lr 2e-6 at 1.3B scale, Adam (0.9, 0.999); small models take a larger lr)."""
    return RunConfig(recipe="ode_init", train=TrainConfig(lr=1e-4, betas=(0.9, 0.999), steps=3000, ema_decay=0.0))


def self_forcing() -> RunConfig:
    """Self-Forcing DMD: the student's own rollout, frozen teacher as real score, trainable critic.

    SF: generator lr 2e-6, critic 4e-7, betas (0, 0.999), weight decay 0.01, clip 10, ratio 5, EMA 0.99
    from step 200. Steps here count critic updates, like SF's iteration counter."""
    return RunConfig(
        recipe="self_forcing",
        train=TrainConfig(lr=2e-6, betas=(0.0, 0.999), steps=600, ema_decay=0.99, ema_start=200),
        dmd=DMDConfig(critic_lr=4e-7, critic_steps=5, guidance_scale=4.0),
    )


def long_tuning() -> RunConfig:
    """LongLive-style: roll out past the teacher's window with the rolling cache and sinks, DMD on the
    last teacher window (LongLive: lr 1e-5 / critic 2e-6)."""
    cfg = self_forcing()
    cfg.recipe = "long_tuning"
    cfg.train.lr, cfg.dmd.critic_lr, cfg.train.steps = 1e-5, 2e-6, 3000
    return cfg


def rollout_regression() -> RunConfig:
    """Supervised fine-tuning of a causal student on its own rollouts: primed with the clip's first real
    blocks, it generates the rest under the clip's actions (Self-Forcing's rollout and gradient truncation)
    and each generated block regresses onto the real one. For worlds recorded from a deterministic
    emulator, where the clip's continuation is the right answer; no teacher or critic."""
    return RunConfig(recipe="rollout_regression",
                     train=TrainConfig(lr=1e-5, betas=(0.9, 0.999), steps=1000, ema_decay=0.99, ema_start=50))


RECIPES: dict[str, Callable[[], RunConfig]] = {
    "teacher": teacher,
    "ar_teacher": ar_teacher,
    "ode_init": ode_init,
    "self_forcing": self_forcing,
    "long_tuning": long_tuning,
    "rollout_regression": rollout_regression,
}


# What one step of each recipe does: the trainer looks its objective up here and never branches on names.
OBJECTIVES: dict[str, type[Objective]] = {
    "teacher": TeacherObjective,
    "ar_teacher": ARTeacherObjective,
    "ode_init": ODEObjective,
    "self_forcing": SelfForcingObjective,
    "long_tuning": LongTuningObjective,
    "rollout_regression": RolloutRegressionObjective,
}


def get_recipe(name: str) -> RunConfig:
    try:
        return RECIPES[name]()
    except KeyError:
        raise KeyError(f"unknown recipe {name!r}; available: {sorted(RECIPES)}") from None
