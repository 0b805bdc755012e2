"""A session over the WebSocket transport (``/v1/ws``): JSON control, binary media (docs/protocol.md §4-5)."""
from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from . import protocol as p
from .base import StreamClient, server_error
from .binary import HEADER_SIZE, MAX_MEDIA_PAYLOAD, unpack_media
from .media import AudioChunk, JpegDecoder, decode_media
from .speech import CHUNK_S, LEAD_S, pcm_messages

log = logging.getLogger("streamgen_client")


def ws_url(url: str) -> str:
    """``http://h:p`` / ``ws://h:p`` / ``ws://h:p/v1/ws`` -> ``ws://h:p/v1/ws``."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"url {url!r} must be http(s):// or ws(s)://host:port")
    path = parts.path.rstrip("/")
    if not path.endswith("/v1/ws"):
        path += "/v1/ws"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def _http_error(e: InvalidStatus) -> Exception:
    """A refused upgrade (503 busy, 401/403 unauthorized) as a ServerError."""
    r = e.response
    try:
        return server_error(p.parse_server_message(bytes(r.body or b"")))  # type: ignore[arg-type]
    except p.ProtocolError:
        pass
    code = {503: "busy", 401: "unauthorized", 403: "unauthorized"}.get(r.status_code, "internal")
    retry = r.headers.get("Retry-After")
    err = p.Error(seq=0, code=code, message=f"HTTP {r.status_code} on the WebSocket upgrade",
                  retry_after_s=float(retry) if retry and retry.isdigit() else (1.0 if code == "busy" else None))
    return server_error(err)


class WSClient(StreamClient):
    transport = "ws"

    def __init__(self, ws: ClientConnection, **kw: Any):
        super().__init__(**kw)
        self._ws = ws
        self._jpeg = JpegDecoder()
        self._send_lock = asyncio.Lock()
        self._speech_sent = 0  # speech samples sent (the media time of the next speech message)

    @classmethod
    async def open(cls, url: str, *, model: str, seed: int = 0, prompt: str | None = None,
                   options: dict[str, Any] | None = None, token: str | None = None,
                   timeout: float = 30.0, **kw: Any) -> "WSClient":
        headers = {"Authorization": f"Bearer {token}"} if token else None
        try:
            ws = await connect(ws_url(url), additional_headers=headers, open_timeout=timeout,
                               max_size=HEADER_SIZE + MAX_MEDIA_PAYLOAD, ping_interval=None)
        except InvalidStatus as e:
            raise _http_error(e) from None
        client = cls(ws, **kw)
        client.spawn(client._read_loop(), "streamgen-ws-reader")
        try:
            await client.send(lambda s: p.Start(seq=s, model=model, seed=seed, prompt=prompt,
                                                options=dict(options or {})))
            await client.wait_started(timeout)
        except BaseException:
            await client.close()
            raise
        client.start_keepalive("streamgen-ws-keepalive")
        return client

    async def _send_text(self, text: str) -> None:
        async with self._send_lock:
            try:
                await self._ws.send(text)
            except ConnectionClosed as e:
                raise ConnectionError(f"websocket closed: {e}") from None

    async def _read_loop(self) -> None:
        reason, on_purpose = "server closed", False
        try:
            async for message in self._ws:
                if isinstance(message, str):
                    self._on_control(message)
                    continue
                try:
                    header, payload = unpack_media(message)
                    item = await self._in_pool(decode_media, header, bytes(payload), self._jpeg)
                except p.ProtocolError as e:
                    log.warning("dropping bad media message (%d bytes): %s", len(message), e)
                    continue
                if isinstance(item, AudioChunk):
                    self._on_audio(item)
                else:
                    self._on_video(item)
        except ConnectionClosed as e:
            reason = f"websocket closed: {e}"
            if e.rcvd is not None:  # the server sent a close frame: e.g. 1012 when it shuts down
                detail = f" ({e.rcvd.reason})" if e.rcvd.reason else ""
                reason, on_purpose = f"close code {e.rcvd.code}{detail}", True
        except asyncio.CancelledError:
            reason = "cancelled"
            raise
        finally:
            close = self._ws.close_code
            if close not in (None, 1000) and not self._started.done():
                reason = f"{reason} (close code {close} {self._ws.close_reason!r})"
            self._finish(reason, server_closed=on_purpose)

    async def _send_speech(self, pcm: Any) -> None:
        """Binary PCM messages of CHUNK_S, at most LEAD_S ahead of the wall clock (the server holds a few s)."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for i, msg in enumerate(pcm_messages(pcm, self.info.audio_in_rate, self._speech_sent)):
            ahead = i * CHUNK_S - (loop.time() - t0)
            if ahead > LEAD_S:
                await asyncio.sleep(ahead - LEAD_S)
            async with self._send_lock:
                try:
                    await self._ws.send(msg)
                except ConnectionClosed as e:
                    raise ConnectionError(f"websocket closed: {e}") from None
        self._speech_sent += pcm.size

    async def _close_transport(self) -> None:
        await self._ws.close()
