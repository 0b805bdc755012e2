"""Headless Debian Chromium in avatar mode: a WAV as the fake microphone goes up as the WebRTC audio track and
drives the face (frames play), text typed into Say makes the server speak (the speech arrives), and a shipped
identity picked in the reference picker becomes the session's reference."""
from __future__ import annotations

import time
import wave

import numpy as np
import pytest
import torch

from streamgen.identity import reference_frames
from streamgen.image_condition import fit_image

pytest.importorskip("playwright")
from playwright.sync_api import sync_playwright  # noqa: E402

from .avatar_model import IDENTITIES, NAME, RATE, shipped_identities, speech_like  # noqa: E402
from .conftest import unhandled  # noqa: E402
from .test_browser import CHROMIUM_ARGS  # noqa: E402

STATE = ("({sid: window.streamgen.sessionId, energy: window.streamgen.audioEnergy, mic: !!window.streamgen.microphone,"
         " decoded: window.streamgen.framesDecoded, hidden: document.getElementById('avatar-form').hidden,"
         " hint: document.getElementById('hint').textContent})")


@pytest.mark.browser
@pytest.mark.parametrize("transport", ["webrtc", pytest.param("ws", marks=pytest.mark.slow)])
def test_microphone_drives_the_face_and_typed_text_is_spoken(avatar_server, tmp_path, transport):
    """Over WebRTC the microphone is the offer's sendrecv audio track; over WebSocket (``-m slow``: the same
    path at another transport) an AudioContext at 16 kHz cuts it into binary speech messages."""
    server = avatar_server
    wav = tmp_path / "voice.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(RATE)
        w.writeframes(np.round(speech_like(2.0, seed=11, step_s=0.25) * 32767).astype("<i2").tobytes())
    args = CHROMIUM_ARGS + ["--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={wav}"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=args)
        try:
            page = browser.new_page()
            page.goto(server.url + "/")
            page.wait_for_function("window.streamgen.models.length > 0", timeout=10_000)
            page.select_option("#transport", transport)
            page.click("#connect")
            page.wait_for_function("window.streamgen.framesDecoded > 8", timeout=30_000)
            before = page.evaluate(STATE)
            avatar = server.state.manager.sessions[before["sid"]].es.avatar
            assert avatar.received == 0  # nothing spoken yet: the face streams on silence
            page.click("#microphone")
            page.wait_for_function("!!window.streamgen.microphone", timeout=10_000)
            t0 = time.monotonic()
            deadline = t0 + 20
            while avatar.received < 2 * RATE and time.monotonic() < deadline:
                time.sleep(0.1)
            mic_s, took = avatar.received / RATE, time.monotonic() - t0
            page.click("#microphone")  # off: the next speech is the server's own
            page.wait_for_function("!window.streamgen.microphone", timeout=5_000)
            said = avatar.received
            time.sleep(1.5)  # the microphone's last speech has come back (the face runs 0.5 s behind)
            energy = page.evaluate(STATE)["energy"]
            page.fill("#say-text", "Hello from the browser.")
            page.click("#say")
            deadline = time.monotonic() + 20
            while avatar.received == said and time.monotonic() < deadline:
                time.sleep(0.1)
            # audioEnergy: sum of squared samples times their duration (WebRTC's totalAudioEnergy): a second of
            # espeak-ng speech adds about 0.01, silence nothing.
            page.wait_for_function(f"window.streamgen.audioEnergy > {energy} + 0.002", timeout=20_000)
            after = page.evaluate(STATE)
            page.click("#connect")  # Disconnect: stop -> bye, the slot freed at once
            page.wait_for_function("window.streamgen.status === 'idle'", timeout=5_000)
        finally:
            browser.close()
    assert not before["hidden"] and "Microphone" in before["hint"]
    # The microphone streamed in real time (the fake capture plays the WAV in a loop).
    assert mic_s >= 2.0 and mic_s <= 1.5 * took + 0.5, (mic_s, took)
    assert avatar.received > said  # the typed text was synthesised and queued as speech
    assert after["decoded"] > before["decoded"] and after["energy"] > energy
    assert not unhandled(server.log.getvalue())


@pytest.mark.browser
def test_picking_a_shipped_identity_sets_the_servers_reference(avatar_server):
    """The picker lists the model's shipped identities (``GET /v1/identities``); a click sends the face as a
    ``reference``, and the session's sink then holds exactly that face (cropped and resized to 32x32), as the
    autoencoder encodes it: first identity 2, then identity 1."""
    server = avatar_server
    pipe = server.state.engine.pipelines[NAME]
    faces = shipped_identities().copy()  # writable, as fit_image wants

    def sink_of(index: int) -> torch.Tensor:  # [1, sink, C, h, w]
        return pipe.decoder.encode(reference_frames(pipe.config, fit_image(faces[index], 32, 32)))

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(server.url + "/")
            page.wait_for_function(f"window.streamgen.identities.length === {IDENTITIES}", timeout=10_000)
            page.click("#connect")
            page.wait_for_function("window.streamgen.framesDecoded > 4", timeout=30_000)
            session = server.state.manager.sessions[page.evaluate("window.streamgen.sessionId")].es.session
            sinks = []
            for index in (2, 1):
                before = torch.cat(session.sink_latents, 1).clone() if session.sink_latents else None
                page.click(f"#identities button[data-index='{index}']")
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:  # applied by the engine at the next block boundary
                    now = torch.cat(session.sink_latents, 1) if session.sink_latents else None
                    if now is not None and (before is None or not torch.equal(now, before)):
                        break
                    time.sleep(0.05)
                sinks.append(torch.cat(session.sink_latents, 1).clone())
                assert page.evaluate("window.streamgen.identity") == index
            errors = page.evaluate("document.getElementById('error').textContent")
            page.click("#connect")
            page.wait_for_function("window.streamgen.status === 'idle'", timeout=5_000)
        finally:
            browser.close()
    assert errors == ""
    for sink, index in zip(sinks, (2, 1)):
        torch.testing.assert_close(sink, sink_of(index).to(sink.dtype), rtol=0, atol=1e-5)
    assert not torch.equal(sinks[0], sinks[1])
    assert not unhandled(server.log.getvalue())
