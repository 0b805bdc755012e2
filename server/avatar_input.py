"""Avatars' input on the server: speech in (WebSocket PCM, the WebRTC microphone, ``say``), the reference
image, the pacing rule that lets a live voice lead the face, and the speech that goes back out.

The event loop writes (``push`` / ``push_said`` / ``set_reference``: checked, bounded, never blocking); the
engine thread reads (``ready`` / ``take`` / ``driving``) at block boundaries. A block of frames ``f .. f+n-1``
needs the speech up to frame ``f + n - 1 + radius`` (``streamgen.audio_features``), so while a voice is live
the engine waits until that much has arrived: the face runs ``(n + radius)`` latent frames behind the voice
(0.5 s for the avatar preset) plus one step. A voice that stops for ``LIVE_GAP_S`` no longer holds the stream
up: the face goes on with silence. What goes back out is the signal each block was driven by
(``SpeechInput.driving``), so the voice plays with the frames it drove.
"""
from __future__ import annotations

import base64
import binascii
import io
import threading
import time
from collections import deque
from typing import Any, Callable

import numpy as np
from PIL import Image
from streamgen_client import protocol as P

from streamgen.image_condition import fit_image

# A voice silent this long is over: blocks stop waiting for its look-ahead (jitter of a live track stays below).
LIVE_GAP_S = 0.5
# Speech a client may hold ahead of the stream (below SpeechInput's own 10 s bound, which drops silently).
MAX_AHEAD_S = 8.0
# Synthesised speech queued per session (a `say` of MAX_SAY_CHARS at espeak-ng's rate is about 30 s).
MAX_SAID_S = 40.0
# A reference image's declared size is checked before it is decoded (a small PNG may declare a huge one);
# it becomes a model-sized frame (64x64 for the avatar preset), so 1024 a side is plenty.
MAX_REFERENCE_SIDE = 1024


class AudioFull(Exception):
    """More speech than a session may hold ahead of its stream; the pushed audio was dropped whole."""


class AvatarInput:
    def __init__(self, *, sample_rate: int, samples_per_frame: int, frames_per_block: int, radius: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.spf, self.fpb, self.radius = sample_rate, samples_per_frame, frames_per_block, radius
        self.clock = clock
        self.limit = int(MAX_AHEAD_S * sample_rate)
        self.lock = threading.Lock()
        self.pending: list[np.ndarray] = []  # float32 [S] each, in arrival order
        self.pending_n = 0
        self.said: deque[np.ndarray] = deque()  # synthesised speech waiting its turn
        self.said_n = 0
        self.reference: np.ndarray | None = None
        self.last_live: float | None = None
        self.in_session = 0  # samples the session holds ahead of its stream (engine thread writes)
        self.received = 0  # samples accepted over the session's life (pushed and said)
        self.synthesising = False  # a `say` is being synthesised (at most one per session)
        self.queued: Callable[[], int] | None = None  # frames waiting in the session's output buffer
        self.idle_frames = 0  # without a live voice, blocks wait while this many frames are queued (hold_idle)

    def hold_idle(self, queued: Callable[[], int], frames: int) -> None:
        """Without a live voice, generate only while fewer than ``frames`` frames are queued (``queued()``): a
        buffer with room for a voice's jitter margin (pacing.VOICE_AHEAD_BLOCKS) is not filled with silence
        that a voice starting would have to wait behind."""
        self.queued, self.idle_frames = queued, frames

    # ----- event loop ----------------------------------------------------------------------------
    def push(self, pcm: np.ndarray) -> None:
        """Live speech (float32 ``[S]`` at ``sample_rate``); AudioFull when it would pass the bound."""
        with self.lock:
            ahead = self.in_session + self.pending_n + pcm.size
            if ahead > self.limit:
                raise AudioFull(f"{ahead / self.rate:.2f} s of audio ahead of the stream, max {MAX_AHEAD_S:g} s; "
                                f"this message's {pcm.size} samples were dropped (send in real time)")
            self.pending.append(pcm)
            self.pending_n += pcm.size
            self.received += pcm.size
            self.last_live = self.clock()

    def push_said(self, pcm: np.ndarray) -> None:
        """Synthesised speech: queued whole and fed to the stream as it needs it."""
        with self.lock:
            if self.said_n + pcm.size > MAX_SAID_S * self.rate:
                raise AudioFull(f"{(self.said_n + pcm.size) / self.rate:.1f} s of speech queued, max {MAX_SAID_S:g} s")
            self.said.append(pcm)
            self.said_n += pcm.size
            self.received += pcm.size

    def set_reference(self, image: np.ndarray) -> None:
        with self.lock:
            self.reference = image  # latest wins; applied at the next block boundary

    # ----- engine thread -------------------------------------------------------------------------
    def ready(self, session: Any) -> bool:
        """Whether the next block may be generated now (see the module docstring)."""
        with self.lock:
            have = session.speech.buffered_samples() + self.pending_n + self.said_n
            live = self.last_live is not None and self.clock() - self.last_live < LIVE_GAP_S
        if not live:
            return self.queued is None or self.queued() < self.idle_frames
        return have >= (self.fpb + self.radius) * self.spf

    def take(self, session: Any) -> np.ndarray | None:
        """The speech for the next block (None: none arrived), and the latest reference applied to ``session``."""
        speech = session.speech
        self.limit = min(self.limit, (speech.max_ahead - self.fpb - self.radius) * self.spf)
        with self.lock:
            parts, self.pending, self.pending_n = self.pending, [], 0
            have = speech.buffered_samples() + sum(p.size for p in parts)
            want = (2 * self.fpb + self.radius) * self.spf - have  # said speech: a block beyond the look-ahead
            while want > 0 and self.said:
                head = self.said.popleft()
                parts.append(head[:want])
                if head.size > want:
                    self.said.appendleft(head[want:])
                self.said_n -= min(want, head.size)
                want -= head.size
            reference, self.reference = self.reference, None
            # What the session will hold once this is pushed: pending and held stay one count for push().
            self.in_session = speech.buffered_samples() + sum(p.size for p in parts)
        if reference is not None:
            session.set_reference(reference)
        return np.concatenate(parts) if parts else None

    def driving(self, session: Any) -> tuple[np.ndarray, int]:
        """The speech ``[S, 1]`` that drove the block just generated, at ``sample_rate``."""
        start = session.next_frame - self.fpb
        pcm = session.speech.driving(start, self.fpb).numpy()
        with self.lock:
            self.in_session = session.speech.buffered_samples()
        return pcm[:, None], self.rate  # [S] -> [S, 1]


def decode_pcm(data: bytes | bytearray | memoryview, sample_rate: int) -> np.ndarray:
    """A client's binary speech message (docs/protocol.md section 5) as float32 ``[S]``; ProtocolError otherwise."""
    hdr, payload = P.unpack_media(data)
    if hdr.kind not in (P.MediaKind.AUDIO_S16, P.MediaKind.AUDIO_F32):
        raise P.ProtocolError("bad_field", f"media kind {hdr.kind.name} from a client; send audio "
                              "(kind 2 = s16le or 3 = f32le)")
    if hdr.channels != 1:
        raise P.ProtocolError("bad_field", f"channels={hdr.channels}: speech in is mono (channels=1)")
    if hdr.sample_rate != sample_rate:
        raise P.ProtocolError("out_of_range", f"sample_rate={hdr.sample_rate}: this model takes {sample_rate} Hz")
    width = 2 if hdr.kind == P.MediaKind.AUDIO_S16 else 4
    if len(payload) == 0 or len(payload) % width:
        raise P.ProtocolError("bad_field", f"payload of {len(payload)} bytes is not a whole, non-zero number of "
                              f"{width}-byte samples")
    if len(payload) // width > P.MAX_AUDIO_IN_S * sample_rate:
        raise P.ProtocolError("too_large", f"{len(payload) // width} samples in one message, max "
                              f"{int(P.MAX_AUDIO_IN_S * sample_rate)} ({P.MAX_AUDIO_IN_S:g} s)")
    if width == 2:
        return np.frombuffer(payload, "<i2").astype(np.float32) / 32768.0
    pcm = np.frombuffer(payload, "<f4")
    bad = np.flatnonzero(~np.isfinite(pcm))
    if bad.size:
        raise P.ProtocolError("bad_field", f"sample {bad[0]} is {pcm[bad[0]]}: f32 speech must be finite")
    return np.clip(pcm, -1.0, 1.0).astype(np.float32)


def decode_reference(b64: str, width: int, height: int, seq: int | None = None) -> np.ndarray:
    """A ``reference`` message's image (base64 PNG or JPEG) as uint8 ``[height, width, 3]``: centre-cropped to
    the model's aspect and resized; ProtocolError for anything else. Any thread."""
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError) as e:
        raise P.ProtocolError("bad_field", f"field 'image' is not base64: {e}", seq) from None
    try:
        img = Image.open(io.BytesIO(raw))
        fmt, (w, h) = img.format, img.size
    except Exception as e:  # noqa: BLE001 - whatever PIL makes of hostile bytes is the client's bad image
        raise P.ProtocolError("bad_field", f"field 'image' is not a PNG or JPEG ({type(e).__name__})", seq) from None
    if fmt not in ("PNG", "JPEG"):
        raise P.ProtocolError("bad_field", f"field 'image' is {fmt}; send PNG or JPEG", seq)
    if not (1 <= w <= MAX_REFERENCE_SIDE and 1 <= h <= MAX_REFERENCE_SIDE):
        raise P.ProtocolError("out_of_range", f"reference image is {w}x{h}; each side must be 1..{MAX_REFERENCE_SIDE}", seq)
    try:
        img = img.convert("RGB")
    except Exception as e:  # noqa: BLE001 - truncated or corrupt data
        raise P.ProtocolError("bad_field", f"reference image does not decode ({type(e).__name__}: {e})", seq) from None
    return fit_image(np.array(img, np.uint8), height, width)  # [H, W, 3] (a writable copy): the start image's crop and resize
