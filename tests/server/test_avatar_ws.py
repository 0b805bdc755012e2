"""Avatars over WebSocket: speech PCM in (good and hostile), the driving speech back out with the frames it
drove, `say` (espeak-ng) and a `reference` image re-cached mid-stream. A real server with the tiny-avatar
preset (random weights: the plumbing, not the lip-sync, is under test)."""
from __future__ import annotations

import asyncio
import base64
import io
import json
import time

import numpy as np
import pytest
import torch
from PIL import Image
from streamgen_client import protocol as P

from streamgen.identity import reference_frames

from .avatar_model import NAME, RATE, speech_like
from .conftest import unhandled
from .ws_client import WsClient


def pcm_message(pcm: np.ndarray, kind: P.MediaKind = P.MediaKind.AUDIO_S16, index: int = 0, channels: int = 1,
                rate: int = RATE) -> bytes:
    data = (np.round(pcm * 32767).astype("<i2") if kind == P.MediaKind.AUDIO_S16 else pcm.astype("<f4")).tobytes()
    hdr = P.MediaHeader(kind=kind, block_index=0, frame_index=index, timestamp_us=0, channels=channels,
                        sample_rate=rate)
    return P.pack_media(hdr, data)


def audio_out(c: WsClient) -> np.ndarray:
    blocks = [(h, p) for h, p in c.media if h.kind == P.MediaKind.AUDIO_F32]
    first = [h.timestamp_us for h, _ in blocks]
    assert first == sorted(first)
    return np.concatenate([np.frombuffer(p, "<f4") for _, p in blocks]) if blocks else np.zeros(0, np.float32)


def test_pcm_in_drives_the_session_and_comes_back_with_its_frames(avatar_server):
    server = avatar_server
    sig = speech_like(2.0)
    sent = np.round(sig * 32767).astype(np.int16).astype(np.float32) / 32768.0  # what s16 carries

    async def run():
        async with WsClient(server.url) as c:
            started = await c.start(NAME)
            sid = started["session_id"]
            avatar = server.state.manager.sessions[sid].es.avatar
            for i in range(20):  # 100 ms messages, faster than real time (within the allowed lead)
                await c.ws.send(pcm_message(sig[i * 1600 : (i + 1) * 1600], index=i))
            await c.wait_for(lambda: audio_out(c).size >= sig.size + 4 * 4000, timeout=30, what="the speech back")
            received = avatar.received
            await c.send(P.Stop(seq=next(c.seq)))
            await c.wait_closed()
            return c, started, received

    c, started, received = asyncio.run(run())
    model = started["model"]
    assert model["audio_in_rate"] == RATE and model["sample_rate"] == RATE and model["channels"] == 1
    listed = next(m for m in server.get_json("/v1/models")["models"] if m["name"] == NAME)
    assert listed["audio_in_rate"] == RATE  # /v1/models says the model takes speech, and at what rate
    assert received == sig.size and not c.errors()
    out = audio_out(c)
    block = int(RATE * model["frames_per_block"] / model["fps"])
    # The speech comes back whole, starting at a block boundary (the blocks before it heard silence).
    starts = [k for k in range(0, out.size - sent.size, block) if np.abs(out[k : k + sent.size] - sent).max() < 1e-6]
    assert len(starts) == 1, "the driving speech is not in the audio out"
    assert np.abs(out[: starts[0]]).max() == 0.0
    # Audio block k carries the speech of video block k: same block_index, same media time.
    video = {h.block_index: h.timestamp_us for h, _ in c.media if h.kind == P.MediaKind.VIDEO_JPEG and h.frame_index == 0}
    for h, _ in c.media:
        if h.kind == P.MediaKind.AUDIO_F32 and h.block_index in video:
            assert abs(h.timestamp_us - video[h.block_index]) <= 1
    assert not unhandled(server.log.getvalue())


def test_hostile_pcm_gets_typed_errors_and_frees_the_slot(avatar_server):
    server = avatar_server
    good = speech_like(0.1)
    cases = {
        "oversized": (pcm_message(speech_like(1.5)), "too_large"),
        "odd bytes": (pcm_message(good)[:-1] + b"", "bad_field"),
        "wrong length field": (pcm_message(good)[:-2], "bad_field"),
        "odd s16 payload": (P.pack_media(P.MediaHeader(kind=P.MediaKind.AUDIO_S16, block_index=0, frame_index=0,
                                                       timestamp_us=0, channels=1, sample_rate=RATE), b"\x00" * 3),
                            "bad_field"),
        "nan": (pcm_message(np.array([0.1, np.nan, 0.2], np.float32), P.MediaKind.AUDIO_F32), "bad_field"),
        "inf": (pcm_message(np.array([np.inf] * 4, np.float32), P.MediaKind.AUDIO_F32), "bad_field"),
        "stereo": (pcm_message(np.zeros(200, np.float32), channels=2), "bad_field"),
        "44.1 kHz": (pcm_message(good, rate=44100), "out_of_range"),
        "video from a client": (P.pack_media(P.MediaHeader(kind=P.MediaKind.VIDEO_JPEG, block_index=0, frame_index=0,
                                                           timestamp_us=0), b"\xff\xd8"), "bad_field"),
        "garbage": (b"\x00" * 40, "bad_field"),
        "empty": (pcm_message(np.zeros(0, np.float32)), "bad_field"),
    }

    async def run():
        got = {}
        async with WsClient(server.url) as c:
            started = await c.start(NAME)
            sid = started["session_id"]
            avatar = server.state.manager.sessions[sid].es.avatar
            for name, (data, _) in cases.items():
                n = len(c.errors())
                await c.ws.send(data)
                await c.wait_for(lambda: len(c.errors()) > n, timeout=10, what=f"an error for {name}")
                got[name] = c.errors()[-1]
            # Flooding: 1 s messages as fast as possible; past the 8 s lead they are refused, never queued.
            n = len(c.errors())
            for i in range(14):
                await c.ws.send(pcm_message(speech_like(1.0, seed=i)))
            await c.wait_for(lambda: "rate_limited" in c.errors()[n:], timeout=10, what="rate_limited")
            held = avatar.pending_n + avatar.in_session
            frames = len(c.media)
            await c.wait_for(lambda: len(c.media) > frames + 4, timeout=10, what="frames after the flood")
            await c.send(P.Stop(seq=next(c.seq)))
            await c.wait_closed()
            return got, held, sid

    baseline = server.run_on_loop(lambda: server.state.manager.in_use())
    got, held, sid = asyncio.run(run())
    assert got == {name: code for name, (_, code) in cases.items()}
    assert held <= 8.0 * RATE
    # The slot is given back (the shared server may still be closing an earlier test's peer: not counted).
    deadline = time.monotonic() + 10
    while server.run_on_loop(lambda: server.state.manager.in_use() > baseline) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.run_on_loop(lambda: (sid in server.state.manager.sessions, server.state.manager.in_use() <= baseline)) \
        == (False, True)
    assert not unhandled(server.log.getvalue())


def test_say_speaks_and_reference_recaches(avatar_server):
    server = avatar_server
    img = Image.new("RGB", (96, 64), (200, 40, 40))  # another aspect than the model's: cropped and resized
    png = io.BytesIO()
    img.save(png, format="PNG")
    ref = base64.b64encode(png.getvalue()).decode()
    pipe = server.state.engine.pipelines[NAME]

    async def run():
        async with WsClient(server.url) as c:
            started = await c.start(NAME, seed=5)
            session = server.state.manager.sessions[started["session_id"]].es.session
            await c.wait_for(lambda: len(c.media) >= 8, timeout=10, what="frames")
            before = torch.cat(session.sink_latents, 1).clone() if session.sink_latents else None
            await c.send(P.Reference(seq=next(c.seq), image=ref))
            await c.send(P.Say(seq=next(c.seq), text="Hello, I am a talking face."))
            await c.wait_for(lambda: np.abs(audio_out(c)).max(initial=0) > 0.05, timeout=20, what="speech")
            after = torch.cat(session.sink_latents, 1).clone()
            await c.send(P.Stop(seq=next(c.seq)))
            await c.wait_closed()
            return c, before, after

    c, before, after = asyncio.run(run())
    assert not c.errors(), c.errors()
    # The sink now holds the reference: the model-sized crop (a solid colour here) as the autoencoder encodes it.
    want = pipe.decoder.encode(reference_frames(pipe.config, np.full((32, 32, 3), (200, 40, 40), np.uint8)))
    assert before is None or not torch.equal(before, after)
    torch.testing.assert_close(after, want.to(after.dtype), rtol=0, atol=1e-5)
    speech = audio_out(c)
    assert np.abs(speech).max() > 0.05 and len([h for h, _ in c.media if h.kind == P.MediaKind.VIDEO_JPEG]) >= 8
    assert not unhandled(server.log.getvalue())


def test_hostile_avatar_messages(avatar_server):
    server = avatar_server
    big = io.BytesIO()
    Image.new("RGB", (5000, 1)).save(big, format="PNG")
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, format="GIF")
    cases = [
        ({"type": "say", "text": ""}, "bad_field"),
        ({"type": "say", "text": "a\u0000b"}, "bad_field"),
        ({"type": "say", "text": "x" * (P.MAX_SAY_CHARS + 1)}, "out_of_range"),
        ({"type": "say", "text": 5}, "bad_field"),
        ({"type": "reference", "image": "not base64!"}, "bad_field"),
        ({"type": "reference", "image": base64.b64encode(b"hello world, no image").decode()}, "bad_field"),
        ({"type": "reference", "image": base64.b64encode(gif.getvalue()).decode()}, "bad_field"),
        ({"type": "reference", "image": base64.b64encode(big.getvalue()).decode()}, "out_of_range"),
        ({"type": "reference", "image": base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40).decode()}, "bad_field"),
    ]

    async def run():
        async with WsClient(server.url) as c:
            await c.start(NAME)
            for msg, _ in cases:
                seq = next(c.seq)
                await c.send(json.dumps({**msg, "seq": seq}))
                await c.reply(seq)
            await c.send(P.Stop(seq=next(c.seq)))
            await c.wait_closed()
            return c.errors()

    assert asyncio.run(run()) == [code for _, code in cases]
    assert not unhandled(server.log.getvalue())
