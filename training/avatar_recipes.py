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
