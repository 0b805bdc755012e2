"""A session over WebRTC (aiortc): ``POST /v1/offer``, remote video/audio tracks, data channel "control".

aiortc is the optional extra ``streamgen-client[webrtc]``; it is imported only when this module is.
The offer is posted with urllib in a worker thread, so no HTTP client library is needed.
"""
from __future__ import annotations

import asyncio
import fractions
import json
import logging
import urllib.error
import urllib.request
from typing import Any

import numpy as np
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame

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


class SpeechTrack(MediaStreamTrack):
    """The client's microphone for avatar models: 20 ms frames of mono s16 at ``rate``, paced on the wall
    clock; the samples given to ``feed`` in order, silence when there are none."""

    kind = "audio"
    FRAME_S = 0.02

    def __init__(self, rate: int) -> None:
        super().__init__()
        self.rate, self.n = rate, int(rate * self.FRAME_S)
        self.queue = np.zeros(0, np.int16)
        self.sent = 0  # samples sent
        self.t0: float | None = None

    def feed(self, pcm: np.ndarray) -> None:
        s16 = np.round(np.clip(pcm, -1.0, 1.0) * 32767.0).astype(np.int16)
        self.queue = np.concatenate([self.queue, s16])

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self.t0 is None:
            self.t0 = loop.time()
        wait = self.t0 + self.sent / self.rate - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        chunk = np.zeros(self.n, np.int16)
        k = min(self.n, self.queue.size)
        chunk[:k], self.queue = self.queue[:k], self.queue[k:]
        frame = AudioFrame.from_ndarray(chunk[None, :], format="s16", layout="mono")  # [1, n]
        frame.sample_rate, frame.pts, frame.time_base = self.rate, self.sent, fractions.Fraction(1, self.rate)
        self.sent += self.n
        return frame


class WebRTCClient(StreamClient):
    transport = "webrtc"

    def __init__(self, pc: RTCPeerConnection, **kw: Any):
        super().__init__(**kw)
        self._pc = pc
        self._dc = pc.createDataChannel(CONTROL_LABEL, ordered=True)
        self._speech: SpeechTrack | None = None  # the audio track of open(speech=True)
        self._dc.on("message", self._on_control)
        self._dc.on("close", lambda: self._finish("data channel closed"))
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._on_state)

    @classmethod
    async def open(cls, url: str, *, model: str, seed: int = 0, prompt: str | None = None,
                   options: dict[str, Any] | None = None, token: str | None = None,
                   timeout: float = 30.0, ice_servers: list[str] | None = None, speech: bool = False,
                   speech_rate: int = 16000, **kw: Any) -> "WebRTCClient":
        """``speech``: offer an audio track of our own (sendrecv) for ``send_audio`` to an avatar model (at
        ``speech_rate``; the server resamples whatever the track carries)."""
        config = RTCConfiguration(iceServers=[RTCIceServer(urls=u) for u in (ice_servers or [])])
        client = cls(RTCPeerConnection(config), **kw)
        try:
            pc = client._pc
            pc.addTransceiver("video", direction="recvonly")
            if speech:
                client._speech = SpeechTrack(speech_rate)
                pc.addTrack(client._speech)  # sendrecv: our voice up, the face's speech down
            else:
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

    async def _send_speech(self, pcm: Any) -> None:
        if self._speech is None:
            raise ValueError("this WebRTC session has no audio track of its own: connect with speech=True")
        rate = self.info.audio_in_rate if self.info is not None else self._speech.rate
        if rate != self._speech.rate:  # the track was opened before the model's rate was known
            from .speech import to_mono

            pcm = await asyncio.to_thread(to_mono, pcm, rate, self._speech.rate)
        self._speech.feed(pcm)

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
        if self._speech is not None:
            self._speech.stop()
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
