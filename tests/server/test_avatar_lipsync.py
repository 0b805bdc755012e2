"""With the trained avatar student (streamgen/weights/avatar/, from the avatar training work): speech sent
through a real aiortc peer moves the mouth in the returned frames with the speech's loudness (issue 17:
correlation >= 0.6 against the speech envelope at the best lag, lag stated). Skipped until the weights ship:
random weights draw no mouth."""
from __future__ import annotations

import asyncio
import base64
import io
import json

import httpx
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from PIL import Image

from streamgen.pipeline import WEIGHTS_DIR

from .conftest import running_server

pytestmark = [
    pytest.mark.skipif(not (WEIGHTS_DIR / "avatar" / "config.json").exists(),
                       reason="needs the trained avatar student (streamgen/weights/avatar/ is absent)"),
    # The first shipped student does not lip-sync (its MODEL_CARD.md: val mouth correlation about 0, its
    # teacher too short to follow the speech): a known failure, not a lower target. strict: a student that
    # passes makes this fail until the mark goes. slow: CI would spend a server start confirming it.
    pytest.mark.xfail(strict=True, reason="the shipped avatar student does not follow the speech yet (MODEL_CARD.md)"),
    pytest.mark.slow,
]


def test_mouth_follows_the_speech_energy(tmp_path):
    from streamgen_client.webrtc_client import SpeechTrack

    from streamgen.speech_synth import say
    from streamgen.training.data.avatar_faces import draw_face, make_identity

    ident = make_identity(np.random.default_rng(1234))
    reference = draw_face(ident, 0.0, 0.5, 1.0, (0.0, 0.0))
    png = io.BytesIO()
    Image.fromarray(reference).save(png, format="PNG")
    speech = np.concatenate([say("The quick brown fox jumps over the lazy dog.", "en-us+f3", 150, 50).audio,
                             np.zeros(8000, np.float32),
                             say("Hello there, how are you doing today?", "en-us", 170, 40).audio])
    with running_server(model="avatar", max_sessions=1) as server:
        async def run():
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pc.addTransceiver("video", direction="recvonly")
            mic = SpeechTrack(16000)
            pc.addTrack(mic)
            channel = pc.createDataChannel("control", ordered=True)
            frames, tasks, opened = [], [], asyncio.Event()
            channel.on("open", opened.set)

            async def read(track):
                try:
                    while True:
                        f = await track.recv()
                        if track.kind == "video":
                            frames.append(f.to_ndarray(format="rgb24"))
                except MediaStreamError:
                    pass

            pc.on("track", lambda t: tasks.append(asyncio.ensure_future(read(t))))
            await pc.setLocalDescription(await pc.createOffer())
            body = {"sdp": pc.localDescription.sdp, "type": "offer", "model": "avatar", "version": 1}
            async with httpx.AsyncClient() as http:
                r = await http.post(server.url + "/v1/offer", json=body, timeout=20)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=r.json()["sdp"], type="answer"))
            await asyncio.wait_for(opened.wait(), 10)
            channel.send(json.dumps({"type": "reference", "seq": 1, "image": base64.b64encode(png.getvalue()).decode()}))
            await asyncio.sleep(1.0)
            start = len(frames)
            mic.feed(speech)
            await asyncio.sleep(speech.size / 16000 + 2.0)
            await pc.close()
            for t in tasks:
                t.cancel()
            return np.stack(frames[start:])

        frames = asyncio.run(run())
    best = mouth_follows(frames, ident, reference, speech_envelope(speech), range(0, int(2 * FPS)))
    print(f"mouth vs speech envelope: r={best[0]:.3f} at a lag of {best[1] / FPS:.3f} s")
    assert best[0] >= 0.6, best


FPS = 16.0  # the avatar's frame rate


def speech_envelope(speech: np.ndarray, rate: int = 16000) -> np.ndarray:
    """Mean absolute amplitude of the speech per video frame."""
    hop = int(rate / FPS)
    return np.abs(speech[: speech.size // hop * hop]).reshape(-1, hop).mean(1)  # [S] -> [frames, hop] -> [frames]


def mouth_opening(frames: np.ndarray, ident, reference: np.ndarray) -> np.ndarray:
    """The mouth opening ``[T]`` read from ``frames`` uint8 ``[T, 64, 64, 3]`` around the identity's mouth: the
    data's own measure (``measure_mouth``), its reading of ``reference`` subtracted."""
    from streamgen.training.data.avatar_faces import measure_mouth, mouth_centre

    centre = mouth_centre(ident)
    return measure_mouth(frames, np.array([centre] * len(frames)), reference, centre)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; 0 where either side never moves (a frozen mouth correlates with nothing)."""
    return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 0.0


def mouth_follows(frames: np.ndarray, ident, reference: np.ndarray, env: np.ndarray, lags: range) -> tuple[float, int]:
    """The best correlation of the mouth opening in ``frames`` with ``env`` (one value per frame) delayed by one
    of ``lags`` frames, and that lag."""
    opening = mouth_opening(frames, ident, reference)
    found = [(correlation(env, opening[lag : lag + env.size]), lag) for lag in lags
             if opening[lag : lag + env.size].size == env.size]
    return max(found, default=(-1.0, lags.start))
