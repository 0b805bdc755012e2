"""Speech-in to frame-out latency of an avatar model over the WebSocket transport, on this machine.

A real server (in this process, loopback) streams ``--model`` (default: the avatar preset); a client sends
speech in real time (100 ms messages): silence, then a loud burst at a known wall time. The burst comes back
in the audio block that it drove, sent with that block's frames; the latency is the wall time from sending
its first sample to receiving the first frame of the block that holds it (the burst may start inside that
block: up to one block, 0.25 s, of the number is that offset). Printed as JSON with the load average.

    python benchmarks/avatar_latency.py [--model avatar] [--bursts 5]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

import numpy as np
from streamgen_client import protocol as P

from tests.server.conftest import RunningServer
from tests.server.test_avatar_ws import pcm_message
from tests.server.ws_client import WsClient

RATE, CHUNK = 16000, 1600  # 100 ms messages


async def measure(url: str, model: str, bursts: int) -> list[float]:
    async with WsClient(url) as c:
        await c.start(model)
        out: list[float] = []
        arrivals: dict[int, float] = {}  # block_index -> wall time its first frame arrived
        sent_at: list[float] = []

        async def watch() -> None:  # when each block's first frame arrives (10 ms resolution)
            seen = 0
            while True:
                for h, _ in c.media[seen:]:
                    if h.kind == P.MediaKind.VIDEO_JPEG and h.frame_index == 0:
                        arrivals.setdefault(h.block_index, time.monotonic())
                seen = len(c.media)
                await asyncio.sleep(0.01)

        watcher = asyncio.ensure_future(watch())
        t0 = time.monotonic()
        for i in range(bursts * 20):  # 2 s per burst: 1.5 s silence, 0.5 s tone
            loud = i % 20 >= 15
            pcm = (0.5 * np.sin(np.arange(CHUNK) * 2 * np.pi * 220 / RATE)).astype(np.float32) if loud \
                else np.zeros(CHUNK, np.float32)
            if loud and i % 20 == 15:
                sent_at.append(time.monotonic())
            await c.ws.send(pcm_message(pcm, index=i))
            await asyncio.sleep(max(0.0, t0 + (i + 1) * CHUNK / RATE - time.monotonic()))
        await asyncio.sleep(2.0)
        watcher.cancel()
        loud_blocks = [h.block_index for h, p in c.media if h.kind == P.MediaKind.AUDIO_F32
                       and np.abs(np.frombuffer(p, "<f4")).max() > 0.25]
        firsts = [b for b in loud_blocks if b - 1 not in loud_blocks]
        for sent, block in zip(sent_at, firsts):
            out.append(arrivals.get(block, float("nan")) - sent)
        return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="avatar")
    ap.add_argument("--bursts", type=int, default=5)
    args = ap.parse_args()
    with RunningServer(model=args.model, max_sessions=1) as server:
        lat = asyncio.run(measure(server.url, args.model, args.bursts))
    print(json.dumps({"model": args.model, "latency_s": [round(x, 3) for x in lat],
                      "median_s": round(float(np.median(lat)), 3), "loadavg": os.getloadavg()}))


if __name__ == "__main__":
    main()
