"""``streamgen evaluate``: its arguments, the checks made before any model loads, and the JSON output.

The measurements themselves are ``training/evaluate.py``'s ``evaluate()``; a bad argument (a missing
dataset, an unknown model, an unwritable ``--out``) is one line and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from streamgen.cli.checks import Parser, UsageError, check_model, check_output_file, loading, report
from streamgen.cli.speed_flags import add_speed_flags, speed_settings

BUILD_DATA = ("python -m streamgen.training.data.atari --game pong --out {data} --episodes 60 --eval-episodes 6 "
              "--steps 1000 --seed 0")


def build_parser():
    p = Parser(prog="streamgen evaluate", description="A world model against the emulator on held-out Atari "
               "episodes: PSNR, action following, sound and stability, printed as JSON (docs/world.md). "
               "Progress goes to stderr. An avatar model (--model avatar) takes other options: "
               "`streamgen evaluate --model avatar --help`.")
    p.add_argument("--model", default="world", help="the model to evaluate: a shipped default, a checkpoint, run or "
                   "step folder (default world)")
    p.add_argument("--data", default="data/atari/pong",
                   help="the recorded dataset (meta.json + eval/ episodes; default data/atari/pong); built by "
                        + BUILD_DATA.format(data="DATA"))
    p.add_argument("--teacher", default=None, help="a pipeline (folder) to compare with, e.g. the teacher's")
    p.add_argument("--teacher-steps", type=int, default=None, help="denoising steps of the teacher (uniform from 1000)")
    p.add_argument("--episodes", type=int, default=None, help="held-out episodes used (default all)")
    p.add_argument("--starts", type=int, default=4, help="rollouts per held-out episode (default 4)")
    p.add_argument("--context", type=int, default=12, help="real frames primed before each rollout (default 12)")
    p.add_argument("--frames", type=int, default=64, help="frames generated per rollout (default 64)")
    p.add_argument("--tolerance", type=float, default=3.0, help="action following tolerance in px of 64x64 (default 3)")
    p.add_argument("--direction-blocks", type=int, default=4,
                   help="blocks of ArrowUp vs ArrowDown in the direction test (default 4; 0: skip)")
    p.add_argument("--next-block-starts", type=int, default=16, help="one-block-ahead starts per episode (0: skip)")
    p.add_argument("--reference-episodes", type=int, default=None,
                   help="training episodes the paddle_reference dynamics table is fitted on (default all; 0: skip)")
    p.add_argument("--stability-frames", type=int, default=10000,
                   help="frames of the long random-keys stream (default 10000; 0: skip)")
    p.add_argument("--drift-bound", type=float, default=12.0,
                   help="mean colour drift (0-255) under which the stream counts as stable (default 12)")
    p.add_argument("--stability-only", action="store_true", help="skip the rollouts (run the stability stream alone)")
    p.add_argument("--split", choices=("val", "test"), default="val",
                   help="split of the counterfactual measure (fresh episodes de-duplicated against training; default "
                        "val, where every choice is made; test: once per shipped model)")
    p.add_argument("--split-episodes", type=int, default=3, help="fresh episodes of the split (default 3; 0: skip the "
                   "counterfactual measure)")
    p.add_argument("--split-contexts", type=int, default=8, help="contexts branched per fresh episode (default 8)")
    p.add_argument("--split-steps", type=int, default=600, help="steps per fresh episode (default 600)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--out", default=None, help="also write the JSON here")
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    add_speed_flags(p, precision=True)  # the evaluated model's speed settings (not the teacher's)
    return p


def is_avatar(model: str) -> bool:
    """Whether ``--model`` names an avatar (speech in): its own arguments and measures (avatar_evaluate_cli)."""
    try:
        from streamgen.checkpoints.run_folder import model_folder
        from streamgen.pipeline import PRESETS, model_config, shipped_models

        named = model in PRESETS or model in shipped_models()
        return model_config(model if named else str(model_folder(model))).audio_in is not None
    except (ValueError, KeyError, OSError):
        return False  # the world path reports the bad name


def check_args(a) -> None:
    """Everything checkable before a model loads: the dataset first (the usual first-run miss)."""
    meta = Path(a.data) / "meta.json"
    if not meta.is_file():
        raise UsageError(f"--data {a.data}: no dataset there (no {meta}); build it with: {BUILD_DATA.format(data=a.data)}")
    for name in ("episodes", "starts", "frames", "threads", "teacher_steps", "split_contexts", "split_steps"):
        value = getattr(a, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} {value}: must be >= 1")
    check_model(a.model)
    if a.teacher:
        check_model(a.teacher)
    if a.split_episodes < 0:
        raise UsageError(f"--split-episodes {a.split_episodes}: must be >= 0")
    if a.out:
        check_output_file(a.out, "--out")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument("--model", default="world")
    if is_avatar(peek.parse_known_args(argv)[0].model):  # speech in: its own arguments and measures
        from .avatar_evaluate_cli import main as avatar_main

        return avatar_main(argv)
    a = build_parser().parse_args(argv)
    try:
        check_args(a)
        import torch

        from streamgen.pipeline import load_pipeline

        from .evaluate import evaluate, uniform_steps

        if a.threads:
            torch.set_num_threads(a.threads)
        with loading(f"--model {a.model}"):
            pipe = load_pipeline(a.model, device="cpu", dtype=getattr(torch, a.dtype) if a.dtype else None,
                                 compile=a.compile, **speed_settings(a))
        teacher = None
        if a.teacher:
            over = {}
            if a.teacher_steps:
                over["denoising_steps"] = uniform_steps(a.teacher_steps)
            with loading(f"--teacher {a.teacher}"):
                teacher = load_pipeline(a.teacher, device="cpu", overrides=over)
    except UsageError as err:
        return report("streamgen evaluate", err)
    result = evaluate(pipe, a.data, teacher=teacher, episodes=a.episodes, starts=a.starts, context=a.context, frames=a.frames,
                      tol=a.tolerance, direction_blocks=a.direction_blocks, stability_frames=a.stability_frames,
                      drift_bound=a.drift_bound, seed=a.seed, rollouts=not a.stability_only,
                      next_block_starts=a.next_block_starts, reference_episodes=a.reference_episodes,
                      progress=not a.no_progress)
    if pipe.acceleration is not None:
        result["acceleration"] = pipe.acceleration.describe()
    if a.split_episodes and not a.stability_only:  # the counterfactual measure (docs/world.md), beside the old ones
        from .counterfactual import report as counterfactual

        result["counterfactual"] = counterfactual(pipe, a.data, a.split, episodes=a.split_episodes, steps=a.split_steps,
                                                  per_episode=a.split_contexts, context=a.context, frames=a.frames,
                                                  tol=a.tolerance, seed=a.seed, progress=not a.no_progress)
    text = json.dumps(result, indent=1, default=float)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
