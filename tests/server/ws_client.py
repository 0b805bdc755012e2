"""A minimal WebSocket test client speaking the protocol directly (websockets library)."""
from __future__ import annotations

import asyncio
import itertools
import json

import websockets
from streamgen_client import protocol as P


class WsClient:
    def __init__(self, url: str, headers: dict | None = None) -> None:
        self.url = url.replace("http://", "ws://") + "/v1/ws"
        self.headers = headers or {}
        self.seq = itertools.count(1)
        self.messages: list[dict] = []
        self.media: list[tuple[P.MediaHeader, bytes]] = []
        self.ws = None
        self.close_code: int | None = None
        self._reader: asyncio.Task | None = None

    async def __aenter__(self) -> "WsClient":
        self.ws = await websockets.connect(self.url, additional_headers=self.headers, max_size=1 << 24)
        self._reader = asyncio.ensure_future(self._read())
        return self

    async def __aexit__(self, *exc) -> None:
        await self.ws.close()
        if self._reader:
            await asyncio.gather(self._reader, return_exceptions=True)

    async def _read(self) -> None:
        try:
            async for m in self.ws:
                if isinstance(m, bytes):
                    hdr, payload = P.unpack_media(m)
                    self.media.append((hdr, bytes(payload)))
                else:
                    self.messages.append(json.loads(m))
        except websockets.ConnectionClosed:
            pass
        self.close_code = self.ws.close_code

    async def send(self, msg) -> None:
        if isinstance(msg, P.Message):
            msg = msg.to_json()
        elif isinstance(msg, dict):
            msg = json.dumps(msg)
        await self.ws.send(msg)

    async def start(self, model: str = "tiny", **kw) -> dict:
        seq = next(self.seq)
        await self.send(P.Start(seq=seq, model=model, **kw))
        return await self.reply(seq)

    async def reply(self, seq: int, timeout: float = 10.0) -> dict:
        async def find():
            while True:
                for m in self.messages:
                    if m.get("reply_to") == seq:
                        return m
                if self._reader.done():
                    raise AssertionError(f"closed ({self.close_code}) before a reply to seq {seq}: {self.messages}")
                await asyncio.sleep(0.01)
        return await asyncio.wait_for(find(), timeout)

    def of_type(self, t: str) -> list[dict]:
        return [m for m in self.messages if m.get("type") == t]

    def errors(self) -> list[str]:
        return [m["code"] for m in self.of_type("error")]

    async def wait_closed(self, timeout: float = 10.0) -> int | None:
        await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        return self.close_code

    async def wait_for(self, cond, timeout: float = 10.0, what: str = "condition") -> None:
        async def poll():
            while not cond():
                await asyncio.sleep(0.02)
        try:
            await asyncio.wait_for(poll(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"timed out waiting for {what}") from None
