"""One client session in a process of its own, for the connect/disconnect cycle test (tests/server/test_cycles.py).

``run(url, transport, ending, ready)`` opens a WebRTC or WebSocket session on the ``tiny`` model, waits
for a few frames, sets ``ready`` and then ends the session as told: "stop" (a stop message, then close),
"close" (close without stop) or "hang" (keep streaming until the parent SIGKILLs the process).
"""
from __future__ import annotations

import asyncio
import json
import sys
import time

import websockets
from streamgen_client import protocol as P

from .rtc_client import RtcClient

FRAMES = 3  # frames received before the session counts as streaming


async def _ws(url: str, ending: str, ready) -> None:
    async with websockets.connect(url.replace("http://", "ws://") + "/v1/ws", max_size=None) as ws:
        await ws.send(P.Start(seq=1, model="tiny").to_json())
        frames, seq = 0, 2
        while frames < FRAMES:
            m = await asyncio.wait_for(ws.recv(), 20)
            frames += isinstance(m, bytes)
        ready.set()
        if ending == "stop":
            await ws.send(P.Stop(seq=seq).to_json())
            while True:  # until the server's bye and close
                m = await asyncio.wait_for(ws.recv(), 20)
                if isinstance(m, str) and json.loads(m).get("type") == "bye":
                    break
        elif ending == "hang":
            while True:
                await ws.send(P.Ping(seq=seq, t_ms=1.0).to_json())
                seq += 1
                await asyncio.sleep(0.5)


async def _rtc(url: str, ending: str, ready) -> None:
    c = await RtcClient(url).connect()
    try:
        await c.wait_for(lambda: len(c.video) >= FRAMES, timeout=20, what="frames")
        ready.set()
        if ending == "stop":
            c.send(P.Stop(seq=next(c.seq)))
            await c.wait_for(lambda: c.of_type("bye"), timeout=20, what="bye")
        elif ending == "hang":
            while True:
                c.send(P.Ping(seq=next(c.seq), t_ms=time.time() * 1000))
                await asyncio.sleep(0.5)
    finally:
        await c.close()


def run(url: str, transport: str, ending: str, ready) -> None:
    try:
        asyncio.run((_rtc if transport == "webrtc" else _ws)(url, ending, ready))
    except Exception as e:  # noqa: BLE001 - reported through the exit code; the parent counts failures
        print(f"cycle client {transport}/{ending}: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
