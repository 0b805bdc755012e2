"""The avatar's training settings (docs/models.md, "Avatars"), one list of ``--set`` pairs per stage on top
of the general recipes (``recipes.py``), so the command line and the tests use the same settings:

``streamgen train teacher $(python -m streamgen.training.avatar_recipes teacher) --data runs/avatar/latents/train --out runs/avatar/teacher``
"""
from __future__ import annotations

import sys

from streamgen.training.config import RunConfig, apply_overrides
from streamgen.training.recipes import get_recipe

SETS: dict[str, list[str]] = {
    "teacher": [
        "model=avatar",
        # 16 latent frames = the reference block + 14 talking frames (1.75 s): the encoded episodes' length.
        "data.num_frames=16",
        # No prompt: there is no text to drop for guidance (audio guidance would drop the speech instead).
        "data.cfg_dropout=0",
        # One sample in ten hears the null speech, so the real score of the distillation can guide by the
        # speech (``dmd.guide_audio``; the teacher of the first 375 steps trained without it).
        "data.audio_dropout=0.1",
        # A 1 M-parameter model from scratch takes a larger rate than the 1.3B recipes (the world teacher: 3e-4).
        "train.lr=3e-4",
        "train.lr_schedule=cosine",
        "train.warmup=200",
        "train.batch=8",
        # The mouth and the eyes are a few latent cells that change; weigh them as the world's paddle.
        "train.motion_weight=3",
        "train.ema_start=500",
        "train.checkpoint_every=250",
        "train.log_every=25",
    ],
    # The causal student's start (docs/world.md's chain): regression onto the bidirectional teacher's
    # trajectories at the student's 3 timesteps, from the teacher's own weights. A small pool and 2 Euler
    # substeps per student step: on the shared CPU the pool is most of the stage's cost.
    "ode_init": [
        "model=avatar",
        "data.num_frames=16",
        "data.cfg_dropout=0",
        "ode.teacher_kind=bidirectional",
        "ode.num_pairs=16",
        "ode.substeps=2",
        # The teacher of 485 steps does not follow the speech yet (val mouth correlation about 0 unguided):
        # guiding its ODE would amplify noise at twice the cost; the next stage guides its score instead.
        "ode.guidance_scale=1",
        "train.batch=8",
        "train.lr=2e-4",
        "train.ema_decay=0.99",
        "train.ema_start=20",
        "train.checkpoint_every=25",
        "train.log_every=5",
    ],
    # Self-Forcing: the student rolls out its own 3-step blocks after the real reference block (the sink),
    # on episodes of 10 latent frames (reference + 8 talking frames = the model's window, so the scores
    # judge a clip laid out as the teacher's, reference first); each generated block regresses onto the real
    # one (weight 1) and the whole clip takes the DMD loss (``regression.dmd_weight``) of the teacher's score
    # guided by the speech (the unconditional branch hears the null speech).
    "rollout_regression": [
        "model=avatar",
        "data.num_frames=10",
        "data.cfg_dropout=0",
        "regression.context_blocks=1",
        "regression.dmd_weight=1",
        "dmd.guidance_scale=2",
        "dmd.shift=3",  # the model's own shift (the 1.3B recipes' 5 is for their scale)
        "dmd.critic_lr=1e-4",  # a short run: the critic must track the student within tens of steps
        "dmd.guide_audio=true",
        "dmd.teacher_attention=bidirectional",
        "dmd.last_step_only=true",
        "train.batch=4",
        "train.lr=1e-4",
        "train.warmup=5",
        "train.motion_weight=3",
        "train.ema_decay=0.9",
        "train.ema_start=10",
        "train.checkpoint_every=10",
        "train.keep_checkpoints=1000",
        "train.log_every=2",
    ],
}


def avatar_config(stage: str, extra: list[str] | None = None) -> RunConfig:
    """The RunConfig of one avatar stage (``SETS[stage]`` on the general recipe), ``extra`` pairs on top."""
    if stage not in SETS:
        raise KeyError(f"unknown avatar stage {stage!r}; available: {sorted(SETS)}")
    return apply_overrides(get_recipe(stage), SETS[stage] + list(extra or []))


def main(argv: list[str] | None = None) -> None:
    """Print a stage's pairs as ``--set`` arguments for ``streamgen train``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in SETS:
        raise SystemExit(f"usage: python -m streamgen.training.avatar_recipes {{{','.join(sorted(SETS))}}}")
    print(" ".join(f"--set {pair}" for pair in SETS[args[0]]))


if __name__ == "__main__":
    main()
