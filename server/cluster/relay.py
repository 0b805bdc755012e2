"""How a session reaches its replica through the gateway: the WebSocket relay and the WebRTC hand-off.

WebSocket: the gateway reads the client's first message, waits in line for a lease, connects to the
replica's own ``/v1/ws`` and relays both ways (server messages get the gateway's ``seq``, so numbering
stays strictly increasing across queue reports and the replica's messages). A relay whose replica dies
(its socket drops without a close frame, or its lease ends) ends with ``error`` + ``bye`` reason
``replica_lost``. WebRTC: the replica answers the offer and holds its lease until the session ends.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
from typing import Any

import websockets
from fastapi import Request, WebSocket
from fastapi.responses import JSONResponse, Response
from streamgen_client import protocol as P

from ..security import check_origin, check_token
from ..limits import TokenBucket
from .core import GatewayCore, Lease
from .waitqueue import QueueFull, QueueTimeout

log = logging.getLogger("streamgen.server.cluster.relay")
LOST = "replica_lost"
INBOX = 64  # client messages held while waiting in line or for the replica to take them; a flood beyond is dropped
DRAIN_S = 2.0  # how long a relay waits for the replica's last messages once its side ends
_keys = itertools.count(1)
_background: set[asyncio.Task] = set()


def _http_error(status: int, err: P.Error, headers: dict | None = None) -> JSONResponse:
    if err.retry_after_s is not None:
        headers = {**(headers or {}), "Retry-After": str(math.ceil(err.retry_after_s))}
    return JSONResponse(err.to_dict(), status_code=status, headers=headers)


def _bearer(conn) -> dict[str, str]:
    """The client's token as a header for the replica (browsers put it in ``?token=`` on a WebSocket)."""
    header = conn.headers.get("authorization")
    if header:
        return {"authorization": header}
    token = conn.query_params.get("token")
    return {"authorization": f"Bearer {token}"} if token else {}


# ----- WebRTC ------------------------------------------------------------------------------------------
async def offer(core: GatewayCore, request: Request) -> Response:
    why = check_token(request, core.settings)
    if why:
        return _http_error(401, P.Error(seq=0, code="unauthorized", message=why), {"WWW-Authenticate": "Bearer"})
    why = check_origin(request, core.settings)
    if why:
        return _http_error(403, P.Error(seq=0, code="unauthorized", message=why))
    body = await _read_capped(request, core.settings.max_offer_bytes)
    if body is None:
        return _http_error(413, P.Error(seq=0, code="too_large",
                                        message=f"offer is over {core.settings.max_offer_bytes} bytes"))
    why = await _offer_fault(core, body)
    if why is not None:  # the replica checks the rest (SDP, fields); this keeps junk from taking a slot
        return _http_error(400, why)
    await core.refresh()
    try:
        ticket = core.join("webrtc")
    except QueueFull as e:
        return _http_error(503, core.busy_error(str(e)))
    stream = core.handle.offer.options(stream=True).remote(body, _bearer(request).get("authorization"))
    try:
        first = await core.wait(ticket, stream, "webrtc")
    except QueueTimeout as e:
        return _http_error(503, core.busy_error(str(e)))
    except Exception as e:  # noqa: BLE001 - the replica died while answering
        log.warning("offer failed on its replica: %s", e)
        return _http_error(500, P.Error(seq=0, code="internal", message=f"the replica failed: {type(e).__name__}"))
    headers = {"Retry-After": first["retry_after"]} if first.get("retry_after") else None
    if first["status"] != 200:
        stream.cancel()
        return Response(first["body"], status_code=first["status"], media_type="application/json", headers=headers)
    key = next(_keys)
    session_id = json.loads(first["body"]).get("session_id")
    core.add(key, Lease("webrtc", first["replica"], first["node"], session_id))
    task = asyncio.ensure_future(_follow(core, key, stream))
    _background.add(task)
    task.add_done_callback(_background.discard)
    return Response(first["body"], status_code=200, media_type="application/json")


async def _read_capped(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it is over ``limit`` bytes (never held beyond that)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


async def _offer_fault(core: GatewayCore, body: bytes) -> P.Error | None:
    """An offer that is not a JSON object or names a model the cluster does not stream."""
    try:
        obj = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        return P.Error(seq=0, code="bad_json", message=f"not valid UTF-8 JSON: {e}"[:500])
    if not isinstance(obj, dict):
        return P.Error(seq=0, code="bad_json", message=f"offer must be a JSON object, got {type(obj).__name__}")
    known = [m["name"] for m in ((await core.describe()) or {}).get("models", [])]
    model = obj.get("model")
    if known and model not in known:
        return P.Error(seq=0, code="out_of_range", message=f"unknown model {str(model)[:64]!r}; this cluster "
                       f"streams {known}")
    return None


async def _follow(core: GatewayCore, key: int, stream: Any) -> None:
    """Keep a WebRTC session's lease counted until its replica says it ended (or the replica dies)."""
    reason = LOST
    try:
        async for item in stream:
            if "ended" in item:
                reason = str(item["ended"])
    except Exception as e:  # noqa: BLE001 - the replica died: its peer connections die with it
        log.info("WebRTC session lease %d ended with its replica: %s", key, e)
    finally:
        core.remove(key, reason, lost=reason == LOST)


# ----- WebSocket -----------------------------------------------------------------------------------------
async def _read_client(ws: WebSocket, client: "_Client", inbox: asyncio.Queue, left: asyncio.Event,
                       max_bytes: int) -> None:
    """The one reader of the client socket: messages into ``inbox`` (a flood beyond it is dropped; the
    replica rate-limits what passes), then None and ``left`` set when the client leaves."""
    try:
        while True:
            m = await ws.receive()
            if m["type"] == "websocket.disconnect":
                break
            data = m.get("text") if m.get("text") is not None else (m.get("bytes") or b"")
            if len(data) > max_bytes:  # answered here; never held in memory beyond this message
                await client.send(lambda s, n=len(data): P.Error(seq=s, code="too_large", message=(
                    f"message is {n} bytes, max {max_bytes} bytes")))
                continue
            try:
                inbox.put_nowait(data)
            except asyncio.QueueFull:
                pass
    except Exception:  # noqa: BLE001 - the socket went away
        pass
    finally:
        left.set()
        while True:  # make room for the end marker
            try:
                inbox.put_nowait(None)
                break
            except asyncio.QueueFull:
                inbox.get_nowait()


class _Client:
    """The client side of a relay: writes with the gateway's own ``seq``."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws, self.seqs, self.open = ws, itertools.count(), True

    async def send_text(self, text: str) -> None:
        if self.open:
            try:
                await self.ws.send_text(text)
            except Exception:  # noqa: BLE001
                self.open = False

    async def send_bytes(self, data: bytes) -> None:
        if self.open:
            try:
                await self.ws.send_bytes(data)
            except Exception:  # noqa: BLE001
                self.open = False

    async def send(self, make) -> None:
        await self.send_text(make(next(self.seqs)).to_json())

    def restamp(self, text: str) -> tuple[str, dict]:
        """The replica's message with the gateway's next ``seq``, and the parsed message."""
        try:
            obj = json.loads(text)
            obj["seq"] = next(self.seqs)
            return json.dumps(obj, separators=(",", ":")), obj
        except (ValueError, TypeError):
            return text, {}

    async def close(self, code: int, reason: str = "") -> None:
        if self.open:
            self.open = False
            try:
                await self.ws.close(code, reason[:120])
            except Exception:  # noqa: BLE001 - already gone
                pass


async def websocket(core: GatewayCore, ws: WebSocket) -> None:
    await ws.accept()
    client = _Client(ws)

    async def refuse(code: str, message: str, close: int, **kw) -> None:
        await client.send(lambda s: P.Error(seq=s, code=code, message=message[:500], **kw))
        await client.close(close, code)

    why = check_token(ws, core.settings) or check_origin(ws, core.settings)
    if why:
        return await refuse("unauthorized", why, 1008)
    inbox: asyncio.Queue = asyncio.Queue(maxsize=INBOX)
    left = asyncio.Event()
    reader = asyncio.ensure_future(_read_client(ws, client, inbox, left, core.settings.max_message_bytes))
    try:
        await _session(core, ws, client, inbox, left, refuse)
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


async def _session(core: GatewayCore, ws: WebSocket, client: _Client, inbox: asyncio.Queue, left: asyncio.Event,
                   refuse) -> None:
    first = await _await_start(core, client, inbox, refuse)
    if first is None:
        return
    await core.refresh()
    try:
        ticket = core.join("ws")
    except QueueFull as e:
        return await refuse("busy", str(e), 1013, retry_after_s=core.settings.retry_after_s)

    async def report(position: int, waited_s: float) -> None:
        await client.send(lambda s: P.Telemetry(seq=s, block_index=0, frames=0, timings_ms={
            "queue_position": float(position), "queued": round(waited_s * 1000.0, 1)}))

    stream = core.handle.ws_lease.options(stream=True).remote()
    gone = asyncio.ensure_future(left.wait())
    try:
        granted = asyncio.ensure_future(core.wait(ticket, stream, "ws", on_position=report))
        done, _ = await asyncio.wait({granted, gone}, return_when=asyncio.FIRST_COMPLETED)
        if granted not in done:  # the client left while waiting: give the place (and any lease) back
            granted.cancel()
            await asyncio.gather(granted, return_exceptions=True)
            return
        ident = granted.result()
    except QueueTimeout as e:
        return await refuse("busy", str(e), 1013, retry_after_s=core.settings.retry_after_s)
    except Exception as e:  # noqa: BLE001 - the replica died before the session began
        return await refuse("internal", f"no replica could start the session: {type(e).__name__}", 1011)
    finally:
        gone.cancel()
    key = next(_keys)
    core.add(key, Lease("ws", ident["replica"], ident["node"]))
    lease = core.leases[key]
    lost = False
    try:
        lost = await _pipe(ws, client, inbox, left, first, ident, stream, lease)
    finally:
        stream.cancel()
        core.remove(key, LOST if lost else (lease.bye or "disconnected"), lost=lost)
    if lost:
        await client.send(lambda s: P.Error(seq=s, code="internal", message=f"replica {ident['replica']} stopped; "
                                            "reconnect for a new session"))
        await client.send(lambda s: P.Bye(seq=s, reason=LOST))
        await client.close(1011, LOST)


async def _await_start(core: GatewayCore, client: _Client, inbox: asyncio.Queue, refuse) -> str | None:
    """The client's first valid ``start`` (as sent), checked here so that no replica slot is taken for
    anything else; faults before it are answered as a single server would. None: the client is gone."""
    settings = core.settings
    bucket = TokenBucket(settings.max_messages_per_s, settings.message_burst)
    checker = P.SeqChecker()
    while True:
        try:
            data = await asyncio.wait_for(inbox.get(), settings.idle_timeout_s)
        except asyncio.TimeoutError:
            data = None
        if data is None:
            await client.close(1000, "idle")
            return None
        if not bucket.take():
            await refuse("rate_limited", "control message flood before start", 1008)
            return None
        if isinstance(data, bytes):
            await client.send(lambda s: P.Error(seq=s, code="bad_json", message="binary messages are not "
                                                "accepted from clients; send JSON text"))
            continue
        try:
            msg = P.parse_client_message(data)
            checker.check(msg.seq)
            if not isinstance(msg, P.Start):
                raise P.ProtocolError("bad_field", f"send 'start' first, got {msg.TYPE!r}", msg.seq)
            known = [m["name"] for m in ((await core.describe()) or {}).get("models", [])]
            if known and msg.model not in known:
                raise P.ProtocolError("out_of_range", f"unknown model {msg.model!r}; this cluster streams {known}",
                                      msg.seq)
        except P.ProtocolError as e:
            await client.send(lambda s, e=e: e.to_error(s))
            continue
        return data


async def _pipe(ws: WebSocket, client: _Client, inbox: asyncio.Queue, left: asyncio.Event, first: str | bytes,
                ident: dict, stream: Any, lease: Lease) -> bool:
    """Relay until one side ends; True when the replica was lost."""
    url = ident["url"].replace("http://", "ws://", 1) + "/v1/ws"
    try:
        upstream = await websockets.connect(url, additional_headers=_bearer(ws), max_size=1 << 24,
                                            open_timeout=10)
    except Exception as e:  # noqa: BLE001 - the replica is unreachable
        log.warning("could not reach replica %s at %s: %s", ident["replica"], url, e)
        return True

    async def up() -> str:
        data = first
        while data is not None:
            await upstream.send(data)
            data = await inbox.get()
        return "client"

    async def down() -> str:
        async for m in upstream:
            if isinstance(m, bytes):
                await client.send_bytes(m)
                continue
            text, msg = client.restamp(m)
            if msg.get("type") == "started":
                lease.session_id = str(msg.get("session_id"))
            elif msg.get("type") == "bye":
                lease.bye = str(msg.get("reason", "bye"))
            await client.send_text(text)
        return "upstream"

    async def watch() -> str:
        async for _ in stream:
            pass
        return "lease"

    tasks = [asyncio.ensure_future(f()) for f in (up, down, watch)]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if tasks[1] not in done and not (left.is_set() or not client.open):
            # The replica's side is ending (a send failed, or the lease broke): let the last messages
            # (error, bye) reach the client before deciding how it ended.
            await asyncio.wait({tasks[1]}, timeout=DRAIN_S)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if left.is_set() or not client.open:  # the client left: end its session on the replica
        await upstream.close()
        return False
    code = upstream.close_code  # None: still open; 1006: the connection dropped without a close frame
    if code is not None and code != 1006:  # the replica closed the session itself (bye, busy, error...)
        await client.close(code, upstream.close_reason or "")
        return False
    await upstream.close()
    return True
