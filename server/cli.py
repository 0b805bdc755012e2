"""``streamgen serve``: run the server with uvicorn (also ``python -m streamgen.server``)."""
from __future__ import annotations

import argparse
import logging
import sys

from .settings import ServerSettings, _default_model


def build_parser(prog: str = "streamgen serve") -> argparse.ArgumentParser:
    d = ServerSettings.model_fields
    p = argparse.ArgumentParser(prog=prog, description="Serve real-time generation over WebRTC and WebSocket, "
                                "with a web page at /. Every option also reads STREAMGEN_<OPTION> from the environment.")
    p.add_argument("--host", help=f"interface to bind (default {d['host'].default})")
    p.add_argument("--port", type=int, help=f"port (default {d['port'].default})")
    p.add_argument("--model", help=f"preset, shipped default or checkpoint folder (default {_default_model()})")
    p.add_argument("--extra-model", dest="extra_models", action="append",
                   help="another model served next to --model (repeatable)")
    p.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda when present)")
    p.add_argument("--max-sessions", type=int, help=f"sessions per device (default {d['max_sessions'].default})")
    p.add_argument("--idle-timeout", dest="idle_timeout_s", type=float,
                   help=f"seconds of client silence before a session is reclaimed (default {d['idle_timeout_s'].default})")
    p.add_argument("--auth-token", help="require 'Authorization: Bearer TOKEN' (or ?token= on the WebSocket)")
    p.add_argument("--allowed-origin", dest="allowed_origins", action="append",
                   help="browser origin allowed besides the same origin (repeatable; '*' for any)")
    p.add_argument("--warmup-blocks", type=int, help=f"blocks generated at start-up (default {d['warmup_blocks'].default})")
    p.add_argument("--ahead-blocks", type=int, help=f"blocks generated ahead of playback (default {d['ahead_blocks'].default})")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    given = {k: v for k, v in vars(args).items() if v is not None and k != "log_level"}
    return ServerSettings(**given)


def serve(argv: list[str] | None = None, prog: str = "streamgen serve") -> int:
    """Parse ``argv`` (without the program name), build the app and run it until interrupted."""
    args = build_parser(prog).parse_args(argv)
    settings = settings_from_args(args)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import uvicorn

    from .app import create_app

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=args.log_level,
                ws_ping_interval=settings.heartbeat_interval_s * 5, ws_ping_timeout=settings.idle_timeout_s,
                ws_max_size=max(1 << 20, settings.max_message_bytes * 4))
    return 0


def main() -> None:
    sys.exit(serve(sys.argv[1:], prog="python -m streamgen.server"))
