"""``streamgen train RECIPE [--set key=value ...] [--resume DIR] [--out DIR] [--data SOURCE]``.

Runs in one process, or under ``torchrun --nproc_per_node N -m streamgen.training.cli RECIPE ...`` with
one process per device (gloo on the CPU, NCCL on GPUs).
"""
from __future__ import annotations

import argparse
import sys

from streamgen.training.config import apply_overrides
from streamgen.training.recipes import RECIPES, get_recipe


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamgen train", description="Train a teacher or a causal student (docs/training.md).")
    p.add_argument("recipe", choices=sorted(RECIPES), help="training stage")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, dotted, JSON value: train.lr=1e-5, init.teacher=runs/teacher")
    p.add_argument("--out", default=None, help="run folder (default runs/<recipe>)")
    p.add_argument("--resume", default=None, metavar="DIR",
                   help="continue from a run, checkpoints or step folder, with its saved config (--set still applies)")
    p.add_argument("--data", default=None, help="'random-latents' or a folder of latent files (= --set data.source=...)")
    p.add_argument("--steps", type=int, default=None, help="= --set train.steps=N")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    p.add_argument("--no-progress", action="store_true", help="log lines only, no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    pairs = list(args.set)
    if args.data is not None:
        pairs.append(f"data.source={args.data}")
    if args.steps is not None:
        pairs.append(f"train.steps={args.steps}")
    try:
        base = get_recipe(args.recipe)
        if args.resume:  # the resumed run's own config, with this command's --set on top
            from streamgen.checkpoints.io import read_json
            from streamgen.training.config import RunConfig
            from streamgen.training.state import resolve_checkpoint

            base = RunConfig.from_dict(read_json(resolve_checkpoint(args.resume) / "trainer.json")["config"])
            if base.recipe != args.recipe:
                raise ValueError(f"{args.resume} is a {base.recipe!r} run, not {args.recipe!r}")
        config = apply_overrides(base, pairs)
    except (KeyError, ValueError, FileNotFoundError) as err:
        print(f"streamgen train: {err}", file=sys.stderr)
        return 2
    if args.print_config:
        print(config.to_json())
        return 0
    from streamgen.training.distributed import init_distributed, shutdown
    from streamgen.training.trainer import Trainer

    dist = init_distributed(config.train.device, config.parallel)
    try:
        out = args.out or (str(_run_folder(args.resume)) if args.resume else f"runs/{args.recipe}")
        trainer = Trainer(config, out, dist=dist, progress=not args.no_progress)
        if args.resume:
            step = trainer.resume(args.resume)
            if dist.is_main:
                print(f"resumed {args.recipe} at step {step} from {args.resume}", file=sys.stderr)
        losses = trainer.train()
        if dist.is_main:
            print(f"done: {args.recipe} step {trainer.step}, last losses {losses}, checkpoints in {trainer.out_dir / 'checkpoints'}",
                  file=sys.stderr)
    finally:
        shutdown()
    return 0


def _run_folder(resume: str):
    """The run folder a checkpoint belongs to (``<run>/checkpoints/step_N`` -> ``<run>``)."""
    from streamgen.training.state import resolve_checkpoint

    return resolve_checkpoint(resume).parent.parent


if __name__ == "__main__":
    sys.exit(main())
