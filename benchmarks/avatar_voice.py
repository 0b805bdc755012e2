"""How continuous the avatar's voice comes back over WebRTC: with and without the shared playout clock
(server/pacing.py ``Playout``), interleaved in one run on one server.

The setup of tests/server/test_avatar_webrtc.py: a real server (in this process, loopback) serving the small
avatar folder of tests/server/avatar_model.py, a real aiortc peer playing a 3 s WAV (then 1 s of silence) as
its microphone. Measured per session: the correlation of the returned voice as it plays (each 20 ms frame at
its timestamp, silence in the gaps) with the WAV's loudness at the best single shift, the playout's underruns
and the gap they added, and per block the timestamp of its first sound minus that of its first frame (the
server's own schedule of both tracks: what a receiver lines up). "before" runs the audio track as it was (silence while a late block is awaited, its
own clock) with the buffer's ahead gating as it was; "after" is what the server does. Printed as JSON with
the load average and this process's CPU time per session.

    PYTHONPATH=. python benchmarks/avatar_voice.py [--rounds 4]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

import streamgen.server.sessions as sessions
import streamgen.server.webrtc as webrtc
from tests.server.avatar_model import RATE, write_avatar_folder
from tests.server.conftest import RunningServer
from tests.server.test_avatar_webrtc import as_played, av_offsets, speak, voice_wav


def mode(name: str) -> None:
    """Switch the server's avatar tracks between the playout clock ("after") and the pacers alone ("before")."""
    after = name == "after"
    webrtc.Playout = ORIGINAL[0] if after else (lambda config: None)
    sessions.VOICE_AHEAD_BLOCKS = ORIGINAL[1] if after else 0


ORIGINAL = (webrtc.Playout, sessions.VOICE_AHEAD_BLOCKS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--hold", type=float, default=0.15, help="the microphone holds its frames back this long "
                    "every 0.5 s (tests/server/test_avatar_webrtc.py Bursty; 0: as it plays)")
    args = ap.parse_args()
    rows: dict[str, list[dict]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_avatar_folder(Path(tmp))
        path = Path(tmp) / "voice.wav"
        _, sig = voice_wav(path)
        with RunningServer(model=str(folder), max_sessions=2) as server:
            for _ in range(args.rounds):
                for name in ("before", "after"):
                    mode(name)
                    cpu, t0, load = time.process_time(), time.monotonic(), os.getloadavg()[0]
                    _, frames, heard, _, (video, audio) = asyncio.run(speak(server, path, sig.size / RATE, args.hold))
                    r, lag = as_played(sig, heard)
                    po, offsets = video.playout, av_offsets(video, audio)
                    rows[name].append({"r": round(r, 3), "lag_ms": lag * 50, "frames": len(frames),
                                       "underruns": po.underruns if po else None,
                                       "gap_s": round(po.gap_s, 3) if po else None,
                                       "av_offset_ms": {"max_abs": round(1000 * max(map(abs, offsets)), 1),
                                                        "last": round(1000 * offsets[-1], 1)} if offsets else None,
                                       "cpu_s": round(time.process_time() - cpu, 2),
                                       "wall_s": round(time.monotonic() - t0, 2), "load": round(load, 2)})
            mode("after")
    summary = {name: {"r_min": min(x["r"] for x in v), "r_median": float(np.median([x["r"] for x in v])),
                      "av_offset_max_ms": max(x["av_offset_ms"]["max_abs"] for x in v if x["av_offset_ms"])}
               for name, v in rows.items()}
    print(json.dumps({"hold_s": args.hold, "summary": summary, "sessions": rows}, indent=1))


if __name__ == "__main__":
    main()
