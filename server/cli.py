"""``streamgen serve``: run the server with uvicorn (also ``python -m streamgen.server``).

Everything that can be wrong with the arguments (a model name or path, the device, a busy port, a setting
out of range) is checked before any model loads and reported as one line with exit code 2.
"""
from __future__ import annotations

import argparse
import logging
import sys

from pydantic import ValidationError

from streamgen.cli.checks import Parser, UsageError, check_device, check_model, check_port, run_command
from streamgen.cli.speed_flags import add_speed_flags

from .cluster import config as cluster_config
from .settings import DTYPES, ServerSettings, default_model

# Libraries that log every ICE candidate pair and STUN check at INFO: quiet unless --log-level debug.
CHATTY_LOGGERS = ("aioice", "aiortc")


def build_parser(prog: str = "streamgen serve") -> argparse.ArgumentParser:
    d = ServerSettings.model_fields
    p = Parser(prog=prog, description="Serve real-time generation over WebRTC and WebSocket, "
               "with a web page at /. Every option also reads STREAMGEN_<OPTION> from the environment "
               "(docs/serving.md lists them all).")
    p.add_argument("--host", help=f"interface to bind (default {d['host'].default}; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, help=f"TCP port of the page, the API and the WebSocket (default {d['port'].default})")
    p.add_argument("--model", help=f"preset, shipped default, checkpoint folder or training run folder "
                   f"(default {default_model()})")
    p.add_argument("--extra-model", dest="extra_models", action="append",
                   help="another model served next to --model (repeatable)")
    p.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda when present)")
    p.add_argument("--max-sessions", type=int, help="sessions per device (default: as many as the measured block "
                   "time keeps at frame rate)")
    p.add_argument("--max-batch", type=int, help="most sessions of a model stepped together in one batched step "
                   "(default: every due session)")
    p.add_argument("--idle-timeout", dest="idle_timeout_s", type=float,
                   help=f"seconds of client silence before a session is reclaimed (default {d['idle_timeout_s'].default})")
    p.add_argument("--auth-token", help="require 'Authorization: Bearer TOKEN' (or ?token= on the WebSocket)")
    p.add_argument("--allowed-origin", dest="allowed_origins", action="append",
                   help="browser origin allowed besides the same origin (repeatable; '*' for any)")
    # Hardening (issue 14): the other limits are STREAMGEN_* settings, listed in docs/serving.md.
    p.add_argument("--allowed-host", dest="allowed_hosts", action="append",
                   help="Host name the server answers to besides localhost and IP addresses (repeatable; '*' for any)")
    p.add_argument("--ops-require-token", action="store_true", default=None,
                   help="/metrics, /v1/models, /v1/stats and /docs need the token too (default: public)")
    p.add_argument("--warmup-blocks", type=int, help=f"blocks generated at start-up (default {d['warmup_blocks'].default})")
    p.add_argument("--ahead-blocks", type=int, help=f"blocks generated ahead of playback (default {d['ahead_blocks'].default})")
    # The GPU path and Wan-family folders (docs/serving.md, docs/checkpoints.md).
    p.add_argument("--attention", help="attention backend: sdpa (default), triton, flash, flex, reference")
    p.add_argument("--dtype", choices=DTYPES, help="default: bfloat16 on CUDA, float32 on CPU")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the block step (CUDA)")
    add_speed_flags(p)  # --quantize, --feature-cache (streamgen.acceleration)
    p.add_argument("--base", help="Wan2.1 folder with the VAE and umT5 for a student checkpoint")
    p.add_argument("--decoder", choices=["vae", "tiny", "preview"], help="video decoder (default: the folder's VAE)")
    p.add_argument("--start-image", help="image file every session of an image-conditioned model starts from (Matrix-Game 2.0)")
    p.add_argument("--image-embeds", help="CLIP tokens of the start image [257, 1280] (.npy / .safetensors / .pt)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="log level of the server and uvicorn (default info; debug also shows aiortc / aioice's "
                        "per-candidate ICE lines)")
    cluster_config.add_arguments(p)
    return p


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    given = {k: v for k, v in vars(args).items() if v is not None and k != "log_level"}
    try:
        return ServerSettings(**given)
    except ValidationError as err:
        first = err.errors()[0]
        if not first["loc"]:  # a check across fields: its message names the values (the input may hold secrets)
            raise UsageError(first["msg"].removeprefix("Value error, ")) from None
        name = ".".join(str(part) for part in first["loc"]) or "settings"
        raise UsageError(f"{name}={first.get('input')!r}: {first['msg'].removeprefix('Value error, ')}") from None


def check_settings(settings: ServerSettings) -> None:
    """What would otherwise fail only after the models loaded (or fail with a traceback in the lifespan)."""
    for name in settings.model_names:
        check_model(name)
    check_device(settings.device)
    check_port(settings.host, settings.port)


def quiet_chatty_loggers(level: str) -> None:
    if level.lower() != "debug":
        for name in CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


def serve(argv: list[str] | None = None, prog: str = "streamgen serve") -> int:
    """Parse ``argv`` (without the program name), build the app and run it until interrupted."""
    args = build_parser(prog).parse_args(argv)

    def check() -> ServerSettings:
        if not args.cluster and cluster_config.misplaced(args):
            raise UsageError(f"{', '.join(cluster_config.misplaced(args))} need --cluster ADDRESS")
        settings = settings_from_args(args)
        check_settings(settings)
        return settings

    settings = run_command(prog, check)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_chatty_loggers(args.log_level)
    if args.cluster:  # Ray Serve (docs/deploy.md); without --cluster nothing imports Ray
        from .cluster.launch import serve_cluster

        server = settings.model_dump(exclude={"host", "port"})
        config = run_command(prog, lambda: cluster_config.from_args(args, server))
        return serve_cluster(args.cluster, settings, config)
    import uvicorn

    from .app import create_app
    from .httpserver import StreamgenServer, uvicorn_options

    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=args.log_level,
                            **uvicorn_options(settings))
    try:
        StreamgenServer(config, app).run()
    except KeyboardInterrupt:  # uvicorn re-raises the captured Ctrl-C once it has shut down (as uvicorn.run does)
        pass
    return 0


def main() -> None:
    sys.exit(serve(sys.argv[1:], prog="python -m streamgen.server"))
