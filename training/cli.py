"""``streamgen train RECIPE [--set key=value ...] [--resume DIR] [--out DIR] [--data SOURCE]``.

Runs in one process, or under ``torchrun --nproc_per_node N -m streamgen.training.cli RECIPE ...`` with
one process per device (gloo on the CPU, NCCL on GPUs). A bad argument (a recipe, a ``--set`` key or
value, a folder) is one line and exit code 2 before any work; at the end the run prints the folder that
``streamgen generate / serve / bench --model`` loads.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from streamgen.checkpoints.run_folder import resolve_checkpoint, resolve_weights
from streamgen.cli.checks import Parser, UsageError, check_device, check_output_folder, loading, report
from streamgen.cli.overrides import coerce, field_type, split_pair
from streamgen.config import ModelConfig
from streamgen.training.config import RunConfig, apply_overrides
from streamgen.training.recipes import RECIPES, get_recipe

PROG = "streamgen train"
RANDOM_SOURCE = "random-latents"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Train a teacher or a causal student (docs/training.md). The run folder "
               "(--out) gets log.jsonl, samples/ and checkpoints/; `streamgen generate --model RUN_FOLDER` "
               "streams its latest EMA weights.")
    p.add_argument("recipe", choices=sorted(RECIPES), help="training stage: " + ", ".join(sorted(RECIPES)))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, dotted, typed by the field (repeatable): train.lr=1e-5, "
                        "init.teacher=runs/teacher, model_overrides.num_layers=4; --print-config shows them all")
    p.add_argument("--out", default=None, help="run folder (default runs/<recipe>, or the resumed run's folder)")
    p.add_argument("--resume", default=None, metavar="DIR",
                   help="continue from a run, checkpoints or step folder, with its saved config (--set still applies)")
    p.add_argument("--data", default=None, help="'random-latents' or a folder of latent files (= --set data.source=...)")
    p.add_argument("--steps", type=int, default=None, help="training steps in all (= --set train.steps=N)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    p.add_argument("--no-progress", action="store_true", help="log lines only, no progress bar")
    return p


def typed_pairs(pairs: list[str]) -> list[str]:
    """``--set`` pairs checked against the RunConfig field types (``model_overrides.*`` against ModelConfig's)
    and re-encoded as JSON, so ``train.steps=1.5`` or ``train.lr=fast`` fail here with one line."""
    out = []
    for pair in pairs:
        key, text = split_pair(pair)
        section, _, rest = key.partition(".")
        cls, name = (ModelConfig, rest) if section == "model_overrides" and rest else (RunConfig, key)
        out.append(f"{key}={json.dumps(coerce(key, text, field_type(cls, name)))}")
    return out


def resolve_config(args: argparse.Namespace) -> RunConfig:
    pairs = list(args.set)
    if args.data is not None:
        pairs.append(f"data.source={args.data}")
    if args.steps is not None:
        if args.steps < 1:
            raise UsageError(f"--steps {args.steps}: must be >= 1")
        pairs.append(f"train.steps={args.steps}")
    pairs = typed_pairs(pairs)
    base = get_recipe(args.recipe)
    if args.resume:  # the resumed run's own config, with this command's --set on top
        from streamgen.checkpoints.io import read_json

        with loading(f"--resume {args.resume}"):
            base = RunConfig.from_dict(read_json(resolve_checkpoint(args.resume) / "trainer.json")["config"])
        if base.recipe != args.recipe:
            raise UsageError(f"--resume {args.resume}: a {base.recipe!r} run, not {args.recipe!r}")
    with loading("--set"):
        config = apply_overrides(base, pairs)
    source = config.data.source
    if source != RANDOM_SOURCE and not Path(source).is_dir():
        raise UsageError(f"data.source {source}: no such folder; give '{RANDOM_SOURCE}' or a folder of latent files "
                         "(docs/training.md, Data)")
    if config.train.device != "auto":
        check_device(config.train.device, option="train.device")
    return config


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = resolve_config(args)
        if args.print_config:
            print(config.to_json())
            return 0
        out = args.out or (str(_run_folder(args.resume)) if args.resume else f"runs/{args.recipe}")
        check_output_folder(out)
    except UsageError as err:
        return report(PROG, err)
    from streamgen.training.distributed import init_distributed, shutdown
    from streamgen.training.trainer import Trainer

    dist = init_distributed(config.train.device, config.parallel)
    try:
        trainer = Trainer(config, out, dist=dist, progress=not args.no_progress)
        if args.resume:
            step = trainer.resume(args.resume)
            if dist.is_main:
                print(f"resumed {args.recipe} at step {step} from {args.resume}", file=sys.stderr)
        losses = trainer.train()
        if dist.is_main:
            weights = resolve_weights(trainer.out_dir)
            print(f"done: {args.recipe} step {trainer.step}, last losses {losses}, checkpoints in "
                  f"{trainer.out_dir / 'checkpoints'}", file=sys.stderr)
            print(f"load it with: streamgen generate --model {trainer.out_dir} (its latest weights: {weights})",
                  file=sys.stderr)
            print(weights)  # stdout: the loadable folder, for scripts
    finally:
        shutdown()
    return 0


def _run_folder(resume: str) -> Path:
    """The run folder a checkpoint belongs to (``<run>/checkpoints/step_N`` -> ``<run>``)."""
    return resolve_checkpoint(resume).parent.parent


if __name__ == "__main__":
    sys.exit(main())
