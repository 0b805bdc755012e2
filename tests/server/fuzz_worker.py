"""A fuzzing client process (run by tests/server/test_fuzz.py): ``python -m tests.server.fuzz_worker URL SEED CASES``.

Runs seeded WebSocket sessions, WebRTC sessions and HTTP requests (tests/server/fuzz_cases.py) against
the server until CASES cases were sent, then prints one JSON line: cases sent and the answers seen. A
process of its own, so the fuzzing clients do not share the server's interpreter (and its GIL).
"""
from __future__ import annotations

import asyncio
import collections
import json
import random
import sys

import httpx
import websockets

from . import fuzz_cases as F
from .rtc_client import RtcClient, offer_sdp


class Fuzzer:
    def __init__(self, url: str, rng: random.Random, sdp: str) -> None:
        self.url, self.ws_url, self.rng, self.sdp = url, url.replace("http://", "ws://") + "/v1/ws", rng, sdp
        self.cases = 0
        self.codes: collections.Counter = collections.Counter()  # error codes and HTTP statuses seen

    def note(self, raw: str | bytes) -> None:
        if isinstance(raw, str):
            try:
                m = json.loads(raw)
            except ValueError:
                return
            if isinstance(m, dict) and m.get("type") == "error":
                self.codes[m.get("code")] += 1

    async def ws_session(self, n: int) -> None:
        rng = self.rng
        try:
            ws = await websockets.connect(self.ws_url, max_size=None, ping_interval=None, open_timeout=10)
        except Exception:  # noqa: BLE001 - refused (connection limit) is an answer too
            self.codes["ws_refused"] += 1
            return
        reader = asyncio.ensure_future(self._drain(ws))
        try:
            if rng.random() < 0.7:  # most sessions get started, to fuzz the started path too
                await ws.send(json.dumps({"type": "start", "seq": 1, "model": "tiny"}))
            for i in range(n):
                await ws.send(F.control_text(rng, seq=2 + i))
                self.cases += 1
                if rng.random() < 0.1:
                    await asyncio.sleep(0.01)
            end = rng.random()
            if end < 0.3:
                ws.transport.abort()  # vanish without a close frame
            elif end < 0.5:
                await ws.send(json.dumps({"type": "stop", "seq": 10_000}))
                await asyncio.sleep(0.05)
                await ws.close()
            else:
                await ws.close()
        except websockets.ConnectionClosed:
            pass
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            ws.transport.abort()

    async def _drain(self, ws) -> None:
        try:
            async for m in ws:
                self.note(m)
        except websockets.ConnectionClosed:
            pass

    async def rtc_session(self, n: int) -> None:
        c = await RtcClient(self.url).connect(expect_ok=False)
        if c.status != 200:
            self.codes[f"http_{c.status}"] += 1
            return
        try:
            await asyncio.wait_for(c.opened.wait(), 10)
            for i in range(n):
                data = F.control_text(self.rng, seq=1 + i)
                if c.channel.readyState != "open":  # the server closed the session (e.g. a stop it was sent)
                    self.codes["rtc_closed"] += 1
                    break
                c.channel.send(data)
                self.cases += 1
                if self.rng.random() < 0.1:
                    await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)
            for m in c.messages:
                if m.get("type") == "error":
                    self.codes[m.get("code")] += 1
            if self.rng.random() < 0.5 and c.channel.readyState == "open":
                c.channel.send(json.dumps({"type": "stop", "seq": 10_000}))
                await asyncio.sleep(0.1)
        except asyncio.TimeoutError:
            self.codes["rtc_no_channel"] += 1
        finally:
            await c.close()

    async def http_cases(self, n: int) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=20) as http:
            for _ in range(n):
                if self.rng.random() < 0.5:
                    r = await http.post("/v1/offer", content=F.offer_body(self.rng, self.sdp),
                                        headers={"content-type": "application/json"})
                    if r.status_code == 200:  # a mutation that is still a valid offer: free the slot
                        await http.get("/healthz")
                else:
                    method, path, headers, body = F.http_request(self.rng)
                    try:
                        r = await http.request(method, path, headers=headers, content=body)
                    except httpx.HTTPError:
                        self.codes["http_error"] += 1
                        continue
                self.cases += 1
                self.codes[f"http_{r.status_code}"] += 1
                self.note(r.text)


async def run(url: str, seed: int, cases: int) -> dict:
    rng = random.Random(seed)
    f = Fuzzer(url, rng, await offer_sdp())
    while f.cases < cases:
        r = rng.random()
        if r < 0.55:
            await f.ws_session(rng.randint(5, 40))
        elif r < 0.65:
            await f.rtc_session(rng.randint(5, 40))
        else:
            await f.http_cases(rng.randint(5, 20))
    return {"cases": f.cases, "codes": dict(f.codes)}


def main() -> None:
    url, seed, cases = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    print(json.dumps(asyncio.run(run(url, seed, cases))), flush=True)


if __name__ == "__main__":
    main()
