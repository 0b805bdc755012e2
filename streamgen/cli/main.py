"""The ``streamgen`` command: generate, bench, info; serve and train are contributed by
``streamgen.server`` and ``streamgen.training`` through the ``streamgen.commands`` entry points, so
the library never imports them."""
from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import entry_points


def _parse_set(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="tiny", help="a preset, a shipped default or a checkpoint folder")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--attention", default=None, help="attention backend (streamgen info lists them)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")


def _load(args):
    import torch

    import streamgen

    if args.threads:
        torch.set_num_threads(args.threads)

    return streamgen.load_pipeline(args.model, device=args.device, overrides=_parse_set(args.set), attention_backend=args.attention)


def cmd_generate(args) -> int:
    from tqdm import tqdm

    from streamgen.cli.mp4 import Mp4Writer

    pipe = _load(args)
    session = pipe.start(seed=args.seed, prompt=args.prompt)
    channels = getattr(pipe, "audio_channels", None) or 1
    with Mp4Writer(args.output, fps=pipe.fps, width=pipe.width, height=pipe.height, sample_rate=pipe.sample_rate, channels=channels) as mp4:
        for _ in tqdm(range(args.blocks), desc=f"generate {args.model}", unit="block", file=sys.stderr):
            chunk = session.step()
            mp4.write_video(chunk.video)
            if chunk.audio is not None and pipe.sample_rate:
                mp4.write_audio(chunk.audio, chunk.sample_rate)
    session.close()
    print(f"wrote {args.output}: {args.blocks} blocks, {args.blocks * pipe.frames_per_chunk} frames at {pipe.fps:g} fps", file=sys.stderr)
    return 0


def cmd_bench(args) -> int:
    from tqdm import tqdm

    from streamgen.cli.bench import run_bench

    pipe = _load(args)
    with tqdm(total=args.blocks - 1, desc=f"bench {args.model}", unit="block", file=sys.stderr, disable=args.quiet) as bar:
        result = run_bench(pipe, blocks=args.blocks, warmup=args.warmup, seed=args.seed, progress=bar)
    print(json.dumps(result, indent=2))
    return 0


def cmd_info(args) -> int:
    import platform

    import torch

    import streamgen
    from streamgen.config import PRESETS
    from streamgen.models.attention import available_backends

    devices = ["cpu"] + [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    info = {
        "streamgen": streamgen.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "presets": sorted(PRESETS),
        "shipped_models": streamgen.shipped_models(),
        "devices": devices,
        "attention_backends": available_backends(),
        "commands": sorted(_plugins()),
    }
    print(json.dumps(info, indent=2))
    return 0


def _plugins() -> dict:
    return {ep.name: ep for ep in entry_points(group="streamgen.commands")}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamgen", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="stream N blocks into an mp4")
    _common(g)
    g.add_argument("--blocks", type=int, default=20)
    g.add_argument("--prompt", default=None)
    g.add_argument("-o", "--output", default="out.mp4")
    g.set_defaults(func=cmd_generate)
    b = sub.add_parser("bench", help="measure frames/s, time to first frame, per-block p50/p95, memory (JSON)")
    _common(b)
    b.add_argument("--blocks", type=int, default=200)
    b.add_argument("--warmup", type=int, default=3)
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=cmd_bench)
    i = sub.add_parser("info", help="presets, shipped models, devices, attention backends")
    i.set_defaults(func=cmd_info)
    for name in _plugins():
        sub.add_parser(name, help=f"(from a plug-in) run `streamgen {name} --help`", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    plugins = _plugins()
    if argv and argv[0] in plugins:
        return int(plugins[argv[0]].load()(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
