"""``streamgen-client record URL --transport ws|webrtc --seconds 10 -o out.mp4``."""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import Sequence

from .base import ServerError
from .api import TRANSPORTS, connect
from .keyscript import KeyScript
from .recorder import record
from .speech import read_wav


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="streamgen-client", description="Client for a streamgen server.")
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("record", help="record a session to an mp4 (video + audio)")
    r.add_argument("url", help="server base URL, e.g. http://127.0.0.1:8000")
    r.add_argument("--transport", choices=TRANSPORTS, default="ws")
    r.add_argument("--seconds", type=float, default=10.0, help="media seconds to record")
    r.add_argument("-o", "--output", default="out.mp4")
    r.add_argument("--model", default=None, help="a model the server streams (default: the server's default)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--prompt", default=None)
    r.add_argument("--token", default=None, help="bearer token, when the server requires one")
    r.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the session to start")
    r.add_argument("--keys", default=None, metavar="SCRIPT",
                   help='keys to hold while recording, in seconds from the first frame: "ArrowUp:0.5-2.0,Space:3" '
                        "(hold ArrowUp 0.5-2 s, tap Space at 3 s) or a JSON file of [{key, from, to} | {key, at}]")
    r.add_argument("--audio", default=None, metavar="WAV",
                   help="avatar models: speak this WAV (any rate / channels; resampled) to the face while recording")
    r.add_argument("-v", "--verbose", action="store_true", help="log the client's debug lines")
    return ap


async def _record(args: argparse.Namespace) -> dict:
    extra = {"speech": True} if args.speech is not None and args.transport == "webrtc" else {}
    client = await connect(args.url, transport=args.transport, model=args.model, seed=args.seed,
                           prompt=args.prompt, token=args.token, timeout=args.timeout, **extra)
    try:
        report = await record(client, args.output, args.seconds, keys=args.key_script, speech=args.speech)
    finally:
        await client.close()
    report["session_id"] = client.session_id
    report["transport"] = args.transport
    # Frames of the recorded span: written, lost on this side (nobody read them in time), discarded by the
    # server as stale, and periods the server's clock moved on without a frame (frames.gap_frames).
    report["frames"]["dropped_client"] = client.dropped_frames
    if client.last_telemetry is not None:
        report["frames"]["dropped_server"] = client.last_telemetry.dropped_frames
    return report


def main(argv: Sequence[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    if args.seconds <= 0:
        ap.error(f"--seconds must be > 0, got {args.seconds}")
    try:
        args.key_script = KeyScript.parse(args.keys) if args.keys else None
        args.speech = read_wav(args.audio) if args.audio else None
    except (ValueError, OSError) as e:
        print(f"streamgen-client record: error: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    try:
        report = asyncio.run(_record(args))
    except ServerError as e:
        retry = getattr(e, "retry_after_s", None)
        print(f"server refused: {e}" + (f" (retry after {retry} s)" if retry else ""), file=sys.stderr)
        return 2
    except (ConnectionError, OSError, TimeoutError) as e:
        print(f"failed: {e}", file=sys.stderr)
        return 1
    except ValueError as e:  # a bad URL or argument
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
