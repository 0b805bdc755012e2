"""Chromium beside tests/server/test_avatar_lipsync.py: a WAV of espeak-ng speech is the page's microphone
(``--use-file-for-fake-audio-capture``, which loops it), the page uploads a drawn face as the reference and
streams over WebRTC, and the mouth opening read from the frames the page shows (``requestVideoFrameCallback``,
placed on a 16 fps grid by their presentation time) follows the WAV's loudness: correlation >= 0.6 at the best
audio-in to frame-out latency within 2 s (issue 17). With the shipped weights only (skipped without); a strict
known failure until a student that lip-syncs ships (its MODEL_CARD.md: 0.03 measured here), and slow (a server
of the real model and a browser). The measure itself is checked on drawn frames whose mouth does follow."""
from __future__ import annotations

import base64
import time
import wave

import numpy as np
import pytest

pytest.importorskip("playwright")
from playwright.sync_api import sync_playwright  # noqa: E402
from PIL import Image  # noqa: E402

from streamgen.pipeline import WEIGHTS_DIR  # noqa: E402

from .conftest import running_server, unhandled  # noqa: E402
from .test_avatar_lipsync import FPS, correlation, mouth_opening, speech_envelope  # noqa: E402
from .test_browser import CHROMIUM_ARGS  # noqa: E402


class NoLipSync(AssertionError):
    """The mouth did not follow the speech: the one failure the known-failure mark expects."""


# Each frame the page presents, drawn at the model's 64x64 into a canvas: [presentation time ms, base64 RGB].
CAPTURE = """() => {
  const v = document.getElementById("video"), c = document.createElement("canvas");
  c.width = 64; c.height = 64;
  const g = c.getContext("2d", { willReadFrequently: true });
  window.captured = []; window.capturing = true;
  const cb = (now, meta) => {
    g.drawImage(v, 0, 0, 64, 64);
    const d = g.getImageData(0, 0, 64, 64).data;
    let s = "";
    for (let i = 0; i < d.length; i += 4) s += String.fromCharCode(d[i], d[i + 1], d[i + 2]);
    window.captured.push([meta.presentationTime, btoa(s)]);
    if (window.capturing) v.requestVideoFrameCallback(cb);
  };
  v.requestVideoFrameCallback(cb);
}"""


def on_grid(captured: list, mic_ms: float) -> tuple[np.ndarray, np.ndarray]:
    """The presented frames ``[T, 64, 64, 3]`` on a 16 fps grid of the time since the microphone started, and
    each one's slot ``[T]``; a slot no frame was presented in repeats the previous frame (what the viewer saw)."""
    slots = {round((t - mic_ms) / 1000 * FPS): data for t, data in captured}
    first, frames, last = min(slots), [], None
    for i in range(first, max(slots) + 1):
        last = slots.get(i, last)
        frames.append(np.frombuffer(base64.b64decode(last), np.uint8).reshape(64, 64, 3))  # RGB bytes -> [H, W, 3]
    return np.stack(frames), np.arange(first, first + len(frames))


def test_the_measure_finds_a_mouth_that_follows_the_wav():
    """The measure of the browser test on frames whose mouth does follow the looping WAV, presented 0.75 s late
    and with a frame now and then missed (placed on the grid by time as the page's are): found, at that latency."""
    from streamgen.training.data.avatar_faces import draw_face, make_identity

    ident = make_identity(np.random.default_rng(1234))
    reference = draw_face(ident, 0.0, 0.5, 1.0, (0.0, 0.0))
    rng = np.random.default_rng(0)
    env = np.repeat(rng.uniform(0, 1, 12), 6)  # a voice's loudness per frame, one loop of the WAV
    latency = 12  # frames (0.75 s)
    mic_ms, captured = 1000.0, []
    for slot in range(20, 120):
        if rng.random() < 0.1:
            continue  # not presented
        level = env[(slot - latency) % env.size]
        frame = draw_face(ident, float(level), 0.5, 1.0, (0.0, 0.0))  # [64, 64, 3]
        captured.append([mic_ms + slot * 1000 / FPS + rng.uniform(-10, 10), base64.b64encode(frame.tobytes()).decode()])
    frames, slots = on_grid(captured, mic_ms)
    opening = mouth_opening(frames, ident, reference)
    r, lag = max((correlation(opening, env[(slots - lag) % env.size]), lag) for lag in range(0, int(2 * FPS)))
    assert r >= 0.8 and lag == latency, (r, lag)


@pytest.mark.skipif(not (WEIGHTS_DIR / "avatar" / "config.json").exists(),
                    reason="needs the trained avatar student (streamgen/weights/avatar/ is absent)")
# raises=NoLipSync: anything else going wrong (no frames, no speech reaching the server) is a real failure.
@pytest.mark.xfail(strict=True, raises=NoLipSync,
                   reason="the shipped avatar student does not follow the speech yet (MODEL_CARD.md)")
@pytest.mark.slow
@pytest.mark.browser
def test_the_pages_microphone_moves_the_mouth(tmp_path):
    from streamgen.speech_synth import say
    from streamgen.training.data.avatar_faces import draw_face, make_identity

    ident = make_identity(np.random.default_rng(1234))
    reference = draw_face(ident, 0.0, 0.5, 1.0, (0.0, 0.0))
    Image.fromarray(reference).save(tmp_path / "face.png")
    speech = np.concatenate([say("The quick brown fox jumps over the lazy dog.", "en-us+f3", 150, 50).audio,
                             np.zeros(8000, np.float32),
                             say("Hello there, how are you doing today?", "en-us", 170, 40).audio,
                             np.zeros(8000, np.float32)])
    wav = tmp_path / "voice.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes(np.round(np.clip(speech, -1, 1) * 32767).astype("<i2").tobytes())
    period = speech.size / 16000  # the fake capture loops the WAV
    args = CHROMIUM_ARGS + ["--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={wav}"]
    with running_server(model="avatar", max_sessions=1) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=args)
        try:
            page = browser.new_page()
            page.goto(server.url + "/")
            page.wait_for_function("window.streamgen.models.length > 0", timeout=10_000)
            page.select_option("#transport", "webrtc")
            page.click("#connect")
            page.wait_for_function("window.streamgen.framesDecoded > 8", timeout=30_000)
            avatar = server.state.manager.sessions[page.evaluate("window.streamgen.sessionId")].es.avatar
            page.set_input_files("#reference", str(tmp_path / "face.png"))
            page.wait_for_function("window.streamgen.references === 1", timeout=10_000)
            page.click("#microphone")
            page.wait_for_function("!!window.streamgen.microphone", timeout=10_000)
            mic_ms = page.evaluate("performance.now()")  # about when the fake capture began the WAV
            time.sleep(1.0)  # the face runs behind the voice: the first spoken blocks are on their way
            page.evaluate(CAPTURE)
            time.sleep(2 * period + 1.0)
            page.evaluate("window.capturing = false")
            captured = page.evaluate("window.captured")
            received = avatar.received
            page.click("#connect")
            page.wait_for_function("window.streamgen.status === 'idle'", timeout=5_000)
        finally:
            browser.close()
        log = server.log.getvalue()
    assert not unhandled(log)
    assert received >= 2 * period * 16000, received  # the page's microphone streamed the WAV in real time
    frames, slots = on_grid(captured, mic_ms)
    assert len(frames) >= 2 * period * FPS * 0.9 and len(captured) >= len(frames) * 0.7, (len(frames), len(captured))
    # The WAV's loudness (it loops) at each frame's moment minus the audio-in to frame-out latency, searched
    # over 0-2 s as in the server test (it absorbs the uncertainty of when the capture began).
    env, opening = speech_envelope(speech), mouth_opening(frames, ident, reference)
    r, lag = max((correlation(opening, env[(slots - lag) % env.size]), lag) for lag in range(0, int(2 * FPS)))
    print(f"Chromium: mouth vs the WAV's loudness r={r:.3f} at a latency of {lag / FPS:.3f} s")
    if r < 0.6:
        raise NoLipSync(f"mouth opening vs the WAV's loudness: r={r:.3f} (latency {lag / FPS:.3f} s), want >= 0.6")
