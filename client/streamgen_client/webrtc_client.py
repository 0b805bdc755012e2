"""A session over WebRTC (aiortc): ``POST /v1/offer``, remote video/audio tracks, data channel "control".

aiortc is the optional extra ``streamgen-client[webrtc]``; it is imported only when this module is.
The offer is posted with urllib in a worker thread, so no HTTP client library is needed.
"""
from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request
from typing import Any

import numpy as np
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from . import protocol as p
from .base import StreamClient, server_error
from .media import AudioChunk, VideoFrame
from .urls import http_endpoint

log = logging.getLogger("streamgen_client")
CONTROL_LABEL = "control"


def offer_url(url: str) -> str:
    """``http://h:p`` / ``ws://h:p`` / ``http://h:p/v1/offer`` -> ``http://h:p/v1/offer``."""
    return http_endpoint(url, "/v1/offer")


def post_offer(url: str, body: str, token: str | None, timeout: float) -> tuple[int, dict[str, str], bytes]:
    """Blocking JSON POST; returns (status, headers, body) for success and HTTP errors alike."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 (URL is the user's server)
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers or {}), e.read()
    except urllib.error.URLError as e:
        raise ConnectionError(f"cannot reach {url}: {e.reason}") from None


def _refusal(status: int, headers: dict[str, str], body: bytes) -> Exception:
    try:
        return server_error(p.parse_server_message(body))  # type: ignore[arg-type]
    except p.ProtocolError:
        pass
    code = {503: "busy", 401: "unauthorized", 403: "unauthorized", 400: "bad_field"}.get(status, "internal")
    retry = headers.get("Retry-After") or headers.get("retry-after")
    err = p.Error(seq=0, code=code, message=f"HTTP {status} from /v1/offer: {body[:200]!r}",
                  retry_after_s=float(retry) if retry and retry.isdigit() else (1.0 if code == "busy" else None))
    return server_error(err)


class WebRTCClient(StreamClient):
    transport = "webrtc"

    def __init__(self, pc: RTCPeerConnection, **kw: Any):
        super().__init__(**kw)
        self._pc = pc
        self._dc = pc.createDataChannel(CONTROL_LABEL, ordered=True)
        self._dc.on("message", self._on_control)
        self._dc.on("close", lambda: self._finish("data channel closed"))
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._on_state)

    @classmethod
    async def open(cls, url: str, *, model: str, seed: int = 0, prompt: str | None = None,
                   options: dict[str, Any] | None = None, token: str | None = None,
                   timeout: float = 30.0, ice_servers: list[str] | None = None, **kw: Any) -> "WebRTCClient":
        config = RTCConfiguration(iceServers=[RTCIceServer(urls=u) for u in (ice_servers or [])])
        client = cls(RTCPeerConnection(config), **kw)
        try:
            pc = client._pc
            pc.addTransceiver("video", direction="recvonly")
            pc.addTransceiver("audio", direction="recvonly")
            await pc.setLocalDescription(await pc.createOffer())  # aiortc gathers all candidates here
            body = p.Offer(sdp=pc.localDescription.sdp, model=model, seed=seed, prompt=prompt,
                           options=dict(options or {})).to_json()
            status, headers, resp = await asyncio.to_thread(post_offer, offer_url(url), body, token, timeout)
            if status != 200:
                raise _refusal(status, headers, resp)
            answer = json.loads(resp)
            client.session_id = answer.get("session_id")
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
            await client.wait_started(timeout)
        except BaseException:
            await client.close()
            raise
        client.start_keepalive("streamgen-rtc-keepalive")
        return client

    async def _send_text(self, text: str) -> None:
        if self._dc.readyState != "open":
            raise ConnectionError(f"data channel {CONTROL_LABEL!r} is {self._dc.readyState}")
        self._dc.send(text)

    def _on_state(self) -> None:
        if self._pc.connectionState in ("failed", "closed"):
            self._finish(f"peer connection {self._pc.connectionState}")

    def _on_track(self, track: MediaStreamTrack) -> None:
        reader = self._read_video if track.kind == "video" else self._read_audio
        self._tasks.append(asyncio.create_task(reader(track), name=f"streamgen-rtc-{track.kind}"))

    async def _read_video(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                image = await self._in_pool(_rgb, frame)  # [H, W, 3] uint8
                self._on_video(VideoFrame(image=image, timestamp_us=_timestamp_us(frame)))
        except MediaStreamError:
            self._finish("video track ended")

    async def _read_audio(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                self._on_audio(AudioChunk(samples=_audio_array(frame), sample_rate=frame.sample_rate,
                                          timestamp_us=_timestamp_us(frame)))
        except MediaStreamError:
            pass

    async def _close_transport(self) -> None:
        await self._pc.close()


def _rgb(frame: Any) -> np.ndarray:
    return frame.to_ndarray(format="rgb24")  # [H, W, 3] uint8


def _timestamp_us(frame: Any) -> int:
    """Media time of a received frame; aiortc's pts count from the first RTP packet received."""
    return int(round(float(frame.pts * frame.time_base) * 1e6))


def _audio_array(frame: Any) -> np.ndarray:
    """av.AudioFrame (s16/flt, packed or planar) -> float32 [S, C]."""
    a = frame.to_ndarray()
    c = len(frame.layout.channels)
    if frame.format.is_planar:
        a = a.T  # [C, S] -> [S, C]
    else:
        a = a.reshape(-1, c)  # [1, S*C] interleaved -> [S, C]
    if a.dtype == np.int16:
        return a.astype(np.float32) / 32768.0
    return a.astype(np.float32)
