"""A real aiortc client for the tests: offer over HTTP, receive both tracks, talk on the control channel."""
from __future__ import annotations

import asyncio
import itertools
import json
import time

import httpx
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from streamgen_client import protocol as P


async def offer_sdp() -> str:
    """A real offer (video and audio receive-only, a control channel) from a peer closed at once: SDP to
    take apart or send as it is."""
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    pc.createDataChannel("control")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


class RtcClient:
    def __init__(self, base_url: str, *, model: str = "tiny", prompt: str | None = None, token: str | None = None,
                 keep_frames: bool = False) -> None:
        self.base_url, self.model, self.prompt, self.token = base_url, model, prompt, token
        self.keep_frames = keep_frames
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # loopback: no STUN
        self.channel = None
        self.video: list[tuple[int, float]] = []  # (pts, arrival monotonic)
        self.audio: list[tuple[int, int, int]] = []  # (pts, samples, sample_rate)
        self.frames: list = []  # decoded frames as ndarrays (keep_frames)
        self.audio_peak: list[int] = []  # peak |sample| of each audio frame (s16)
        self.messages: list[dict] = []
        self.session_id: str | None = None
        self.seq = itertools.count(1)
        self.t_offer: float | None = None
        self.t_first_frame: float | None = None
        self._tasks: list[asyncio.Task] = []
        self.opened = asyncio.Event()
        self.status: int | None = None
        self.answer_body: dict | None = None

    async def connect(self, expect_ok: bool = True) -> "RtcClient":
        pc = self.pc
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
        self.channel = pc.createDataChannel("control", ordered=True)
        self.channel.on("open", self.opened.set)
        self.channel.on("message", lambda m: self.messages.append(json.loads(m)))

        @pc.on("track")
        def on_track(track) -> None:
            self._tasks.append(asyncio.ensure_future(self._read(track)))

        await pc.setLocalDescription(await pc.createOffer())
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        body = {"sdp": pc.localDescription.sdp, "type": "offer", "model": self.model, "seed": 0,
                "prompt": self.prompt, "options": {}, "version": 1}
        self.t_offer = time.monotonic()
        async with httpx.AsyncClient() as http:
            r = await http.post(self.base_url + "/v1/offer", json=body, headers=headers, timeout=20)
        self.status, self.answer_body, self.headers = r.status_code, r.json(), r.headers
        if r.status_code != 200:
            if expect_ok:
                raise AssertionError(f"offer answered {r.status_code}: {r.text}")
            await pc.close()
            return self
        self.session_id = self.answer_body["session_id"]
        await pc.setRemoteDescription(RTCSessionDescription(sdp=self.answer_body["sdp"], type="answer"))
        return self

    async def _read(self, track) -> None:
        try:
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    now = time.monotonic()
                    if self.t_first_frame is None:
                        self.t_first_frame = now
                    self.video.append((frame.pts, now))
                    if self.keep_frames:
                        self.frames.append(frame.to_ndarray(format="rgb24"))
                else:
                    self.audio.append((frame.pts, frame.samples, frame.sample_rate))
                    self.audio_peak.append(int(abs(frame.to_ndarray().astype("int32")).max()))
        except MediaStreamError:
            pass

    def send(self, msg: P.Message | dict | str | bytes) -> None:
        if isinstance(msg, P.Message):
            msg = msg.to_json()
        elif isinstance(msg, dict):
            msg = json.dumps(msg)
        self.channel.send(msg)

    def key(self, key: str, down: bool) -> int:
        seq = next(self.seq)
        self.send(P.KeyAction(seq=seq, key=key, down=down, t_ms=time.time() * 1000))
        return seq

    def of_type(self, t: str) -> list[dict]:
        return [m for m in self.messages if m.get("type") == t]

    async def wait_for(self, cond, timeout: float = 10.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        await self.pc.close()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
