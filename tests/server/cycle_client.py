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
TIMEOUT_S = 90.0  # generous: on a loaded machine a first frame can take many seconds
PING_S = 0.5  # like a real client, ping all along (the server reclaims a silent session)


async def _ws(url: str, ending: str, ready) -> None:
    async with websockets.connect(url.replace("http://", "ws://") + "/v1/ws", max_size=None,
                                  open_timeout=TIMEOUT_S) as ws:
        seqs = iter(range(1, 1 << 30))
        await ws.send(P.Start(seq=next(seqs), model="tiny").to_json())

        async def pinger():
            while True:
                await asyncio.sleep(PING_S)
                await ws.send(P.Ping(seq=next(seqs), t_ms=1.0).to_json())

        ping = asyncio.ensure_future(pinger())
        try:
            frames = 0
            while frames < FRAMES:
                m = await asyncio.wait_for(ws.recv(), TIMEOUT_S)
                frames += isinstance(m, bytes)
            ready.set()
            if ending == "stop":
                ping.cancel()
                await ws.send(P.Stop(seq=next(seqs)).to_json())
                while True:  # until the server's bye and close
                    m = await asyncio.wait_for(ws.recv(), TIMEOUT_S)
                    if isinstance(m, str) and json.loads(m).get("type") == "bye":
                        break
            elif ending == "hang":
                await asyncio.sleep(3600)  # streaming (and pinging) until SIGKILLed
        finally:
            ping.cancel()


async def _rtc(url: str, ending: str, ready) -> None:
    c = await RtcClient(url).connect()

    async def pinger():
        await asyncio.wait_for(c.opened.wait(), TIMEOUT_S)
        while True:
            c.send(P.Ping(seq=next(c.seq), t_ms=time.time() * 1000))
            await asyncio.sleep(PING_S)

    ping = asyncio.ensure_future(pinger())
    try:
        await c.wait_for(lambda: len(c.video) >= FRAMES, timeout=TIMEOUT_S, what="frames")
        ready.set()
        if ending == "stop":
            ping.cancel()
            c.send(P.Stop(seq=next(c.seq)))
            await c.wait_for(lambda: c.of_type("bye"), timeout=TIMEOUT_S, what="bye")
        elif ending == "hang":
            await asyncio.sleep(3600)  # streaming (and pinging) until SIGKILLed
    finally:
        ping.cancel()
        await c.close()


def run(url: str, transport: str, ending: str, ready) -> None:
    try:
        asyncio.run((_rtc if transport == "webrtc" else _ws)(url, ending, ready))
    except Exception as e:  # noqa: BLE001 - reported through the exit code; the parent counts failures
        print(f"cycle client {transport}/{ending}: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
