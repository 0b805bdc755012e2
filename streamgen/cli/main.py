"""The ``streamgen`` command: generate, bench, info; serve, train and evaluate are contributed by
``streamgen.server`` and ``streamgen.training`` through the ``streamgen.commands`` entry points, so
the library never imports them. A bad argument is one ``streamgen CMD: error: ...`` line and exit code 2."""
from __future__ import annotations

import argparse
import json
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path

from streamgen.cli.checks import (Parser, UsageError, check_attention, check_device, check_model, check_output_file,
                                  loading, run_command)
from streamgen.cli.overrides import coerce_pairs
from streamgen.cli.speed_flags import add_speed_flags, speed_settings


def model_overrides(pairs: list[str]) -> dict:
    """``--set`` pairs as typed ModelConfig overrides (top-level fields; a nested config as a JSON object)."""
    from streamgen.config import ModelConfig

    out = coerce_pairs(pairs, ModelConfig)
    nested = [k for k in out if "." in k]
    if nested:
        section = nested[0].split(".")[0]
        raise UsageError(f"--set {nested[0]}: set the whole section as JSON, e.g. --set {section}='{{...}}'")
    return out


def positive(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


positive.__name__ = "integer >= 1"  # argparse names the type in its error line


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="tiny",
                   help="a preset, a shipped default, a checkpoint folder, or a training run / step folder "
                        "(its EMA weights, else the student's); `streamgen info` lists the names (default tiny)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available, else cpu)")
    p.add_argument("--attention", default=None,
                   help="attention backend: reference, sdpa, flex, triton or flash where installed (default sdpa; "
                        "`streamgen info` lists what this machine has)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"], help="default: bf16 on CUDA, fp32 on CPU")
    p.add_argument("--compile", action="store_true", help="torch.compile the block step (inductor; the warm-up pays for it)")
    p.add_argument("--base", default=None, help="Wan2.1 folder with the VAE and umT5 for a student checkpoint")
    p.add_argument("--decoder", default=None, choices=["vae", "tiny", "preview"], help="default: the folder's VAE")
    p.add_argument("--start-image", default=None, help="image file an image-conditioned model (Matrix-Game 2.0) starts from")
    p.add_argument("--image-embeds", default=None, help="CLIP tokens of the start image [257, 1280] (.npy / .safetensors / .pt)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a model config field, typed by the field (repeatable): --set window_frames=9")
    p.add_argument("--seed", type=int, default=0, help="noise seed of the session (default 0)")
    p.add_argument("--threads", type=positive, default=None, help="CPU threads for torch (default: torch's choice)")


def _check(args) -> dict:
    """Everything checkable before the (slow) model load; returns the typed overrides."""
    check_model(args.model)
    check_device(args.device)
    check_attention(args.attention, args.device)
    return model_overrides(args.set)


def _load(args, overrides: dict, speed: dict | None = None):
    import torch

    import streamgen
    from streamgen.checkpoints.run_folder import model_folder

    if args.threads:
        torch.set_num_threads(args.threads)
    if os.path.isdir(args.model) and model_folder(args.model) != Path(args.model):
        print(f"{args.model}: loading {model_folder(args.model)}", file=sys.stderr)
    with loading(f"--model {args.model}"):
        return streamgen.load_pipeline(args.model, device=args.device, overrides=overrides, attention_backend=args.attention,
                                       dtype=getattr(torch, args.dtype) if args.dtype else None, base=args.base,
                                       decoder=args.decoder, compile=args.compile, start_image=args.start_image,
                                       image_embeds=args.image_embeds, **(speed or {}))


def cmd_generate(args) -> int:
    from tqdm import tqdm

    from streamgen_client.recorder import Mp4Recorder

    from streamgen.cli.generate import DEFAULT_BLOCKS, check_avatar_model, generate_avatar, read_avatar_inputs

    overrides = _check(args)
    check_output_file(args.output)
    avatar = read_avatar_inputs(args.audio, args.reference)
    try:
        from streamgen.pipeline import model_config

        config = model_config(args.model, overrides)
    except ValueError:  # a training run or a Wan folder: checked once loaded
        config = None
    if config is not None:
        check_avatar_model(config, args.model, avatar, args.audio, args.reference)
    pipe = _load(args, overrides, speed_settings(args))
    check_avatar_model(pipe.config, args.model, avatar, args.audio, args.reference)
    st = pipe.streaming_settings()
    print(f"{pipe.name}: family {pipe.config.family}, block {st['frames_per_block']}, window {st['window_frames']}, "
          f"sink {st['sink_frames']}, steps {st['denoising_steps']} (shift {st['shift']:g})", file=sys.stderr)
    session = pipe.start(seed=args.seed, prompt=args.prompt)
    speech_in = pipe.config.audio_in
    rate = speech_in.sample_rate if speech_in is not None else pipe.sample_rate  # avatars: the driving speech
    channels = 1 if speech_in is not None else pipe.audio_channels or 0
    with Mp4Recorder(args.output, fps=pipe.fps, width=pipe.width, height=pipe.height, sample_rate=rate,
                     channels=channels) as mp4:
        if speech_in is not None:
            with tqdm(desc=f"generate {args.model}", unit="block", file=sys.stderr) as bar:
                blocks = generate_avatar(pipe, session, avatar, args.blocks, mp4, progress=bar)
        else:
            blocks = args.blocks or DEFAULT_BLOCKS
            for _ in tqdm(range(blocks), desc=f"generate {args.model}", unit="block", file=sys.stderr):
                chunk = session.step()
                mp4.write_video(chunk.video)
                if chunk.audio is not None and pipe.sample_rate:
                    mp4.write_audio(chunk.audio, chunk.sample_rate)
    session.close()
    print(f"wrote {args.output}: {blocks} blocks, {blocks * pipe.frames_per_chunk} frames at {pipe.fps:g} fps", file=sys.stderr)
    return 0


def cmd_bench(args) -> int:
    from tqdm import tqdm

    from streamgen.cli.bench import run_bench

    if args.warmup < 0:
        raise UsageError(f"--warmup {args.warmup}: must be >= 0")
    pipe = _load(args, _check(args), speed_settings(args))
    results = []
    for n in args.sessions:
        with tqdm(total=args.blocks - 1, desc=f"bench {args.model} x{n}", unit="block", file=sys.stderr,
                  disable=args.quiet) as bar:
            results.append(run_bench(pipe, blocks=args.blocks, warmup=args.warmup, seed=args.seed, progress=bar,
                                     sessions=n))
    print(json.dumps(results[0] if len(results) == 1 else results, indent=2))
    return 0


def cmd_info(args) -> int:
    import platform

    import torch

    import streamgen
    from streamgen.presets import PRESETS
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


# One line each for the commands that plug-ins contribute (their own --help has the options).
PLUGIN_HELP = {
    "serve": "serve models over WebRTC and WebSocket with a web page (docs/serving.md)",
    "train": "train a teacher or a causal student (docs/training.md)",
    "evaluate": "evaluate a world model (docs/world.md) or an avatar (docs/models.md) on held-out data",
}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="streamgen", description="Real-time streaming generation: generate and benchmark streams, "
                    "serve them, train and evaluate models. `streamgen COMMAND --help` shows a command's options.",
                    epilog="Docs: README.md and docs/*.md. Exit codes: 0 done, 2 a bad argument (one line on stderr).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    g = sub.add_parser("generate", help="stream N blocks of a model into an mp4 (with sound for models that have it)",
                       description="Stream N blocks of a model into an mp4 (H.264, AAC sound for joint models; "
                       "an avatar driven by --audio has that speech as its sound).")
    _common(g)
    g.add_argument("--blocks", type=positive, default=None,
                   help="blocks to generate (default 20; with --audio, as many as the speech lasts)")
    g.add_argument("--prompt", default=None, help="text prompt, for models that take one (default none)")
    g.add_argument("--audio", default=None, metavar="WAV",
                   help="avatars: a PCM WAV (any rate and channels) that drives the face; the mp4's sound is that speech")
    g.add_argument("--reference", default=None, metavar="IMAGE",
                   help="avatars: the face's reference image (PNG / JPEG; centre-cropped and resized to the model's size)")
    g.add_argument("-o", "--output", default="out.mp4", help="mp4 file to write (default out.mp4)")
    add_speed_flags(g)
    g.set_defaults(func=cmd_generate)
    b = sub.add_parser("bench", help="measure frames/s, time to first frame, per-block p50/p95, memory (JSON)",
                       description="Measure a streaming session: frames/s, time to first frame, per-block "
                       "p50/p95 and memory, printed as JSON (docs/benchmarks.md).")
    _common(b)
    b.add_argument("--blocks", type=positive, default=200, help="blocks to time, the first one included (default 200)")
    b.add_argument("--warmup", type=int, default=3, help="blocks of a warm-up session before timing (default 3)")
    b.add_argument("--sessions", type=positive, nargs="+", default=[1], metavar="N",
                   help="sessions stepped together in one batched step per block; several values (1 2 4 8) "
                   "print a JSON list, one result per count (default 1)")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    add_speed_flags(b)
    b.set_defaults(func=cmd_bench)
    i = sub.add_parser("info", help="presets, shipped models, devices, attention backends (JSON)",
                       description="Presets, shipped models, devices and attention backends of this machine (JSON).")
    i.set_defaults(func=cmd_info)
    for name in _plugins():
        sub.add_parser(name, help=PLUGIN_HELP.get(name, f"run `streamgen {name} --help`"), add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    plugins = _plugins()
    if argv and argv[0] in plugins:
        return int(plugins[argv[0]].load()(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    return int(run_command(f"streamgen {args.command}", lambda: args.func(args)) or 0)


if __name__ == "__main__":
    sys.exit(main())
