"""A session's avatar messages (docs/protocol.md): binary speech PCM, ``say`` and ``reference``, checked and
handed to its :class:`~.avatar_input.AvatarInput`. Every fault is a typed ProtocolError or error message;
``say`` runs espeak-ng off the event loop (``streamgen.speech_synth``: a process per utterance, stopped at
``SAY_TIMEOUT_S``), at most one per session at a time. Over WebRTC the voice is the peer's audio track
(``read_microphone``)."""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from typing import Awaitable, Callable

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioResampler
from streamgen.speech_synth import say
from streamgen_client import protocol as P

from .avatar_input import AudioFull, AvatarInput, decode_pcm, decode_reference

log = logging.getLogger("streamgen.server.avatar")
# At most this many utterances are synthesised at once server-wide (each thread waits on its process).
SAY_WORKERS = 2
# A few hundred characters take well under a second; a worker past this is killed.
SAY_TIMEOUT_S = 10.0
# The voice `say` speaks with (espeak-ng's default English voice, its default rate and pitch).
SAY_VOICE, SAY_RATE, SAY_PITCH = "en-us", 160, 50
_say_pool = concurrent.futures.ThreadPoolExecutor(max_workers=SAY_WORKERS, thread_name_prefix="streamgen-say")


class AvatarControl:
    def __init__(self, avatar: AvatarInput, *, width: int, height: int, wake: Callable[[], None],
                 send_error: Callable[..., Awaitable[None]]) -> None:
        self.input, self.width, self.height = avatar, width, height
        self.wake, self.send_error = wake, send_error
        self.task: asyncio.Task | None = None  # the `say` being synthesised
        self.decoding: asyncio.Task | None = None  # the `reference` being decoded

    def audio(self, data: bytes | bytearray | memoryview) -> None:
        """One binary speech message; ProtocolError when malformed, over a bound, or beyond the lead allowed."""
        pcm = decode_pcm(data, self.input.rate)
        try:
            self.input.push(pcm)
        except AudioFull as e:
            raise P.ProtocolError("rate_limited", str(e)) from None
        self.wake()

    def apply(self, msg: P.Say | P.Reference) -> None:
        if isinstance(msg, P.Reference):
            if self.decoding is not None and not self.decoding.done():
                raise P.ProtocolError("rate_limited", "the previous reference image is still being decoded", msg.seq)
            self.decoding = asyncio.ensure_future(self._reference(msg))
            return
        if self.task is not None and not self.task.done():
            raise P.ProtocolError("rate_limited", "a 'say' is still being synthesised; send the next when it "
                                  "is queued", msg.seq)
        self.task = asyncio.ensure_future(self._say(msg))

    async def _reference(self, msg: P.Reference) -> None:
        """Decode off the event loop (a few ms for the page's small JPEG; the size bound keeps a hostile one
        to tens of ms), one at a time per session."""
        loop = asyncio.get_running_loop()
        try:
            image = await loop.run_in_executor(None, decode_reference, msg.image, self.width, self.height, msg.seq)
        except asyncio.CancelledError:
            return
        except P.ProtocolError as e:
            await self.send_error(e.code.value, e.message, reply_to=e.seq)
            return
        self.input.set_reference(image)
        self.wake()

    async def _say(self, msg: P.Say) -> None:
        loop = asyncio.get_running_loop()
        try:
            utterance = await loop.run_in_executor(
                _say_pool, lambda: say(msg.text, SAY_VOICE, SAY_RATE, SAY_PITCH, timeout_s=SAY_TIMEOUT_S))
            self.input.push_said(utterance.audio)
            self.wake()
        except asyncio.CancelledError:
            pass
        except AudioFull as e:
            await self.send_error("rate_limited", str(e), reply_to=msg.seq)
        except Exception as e:  # noqa: BLE001 - espeak-ng missing, failing or too slow: the client hears why
            log.warning("say failed: %s: %s", type(e).__name__, e)
            await self.send_error("internal", f"speech synthesis failed ({type(e).__name__}: {str(e)[:200]})",
                                  reply_to=msg.seq)

    def close(self) -> None:
        for task in (self.task, self.decoding):
            if task is not None:
                task.cancel()


async def read_microphone(track: MediaStreamTrack, avatar: AvatarInput, wake) -> None:
    """Feed an avatar session the client's audio track (its microphone): every frame resampled to mono at
    the speech-in rate. Audio beyond the session's lead (a client sending faster than real time) is dropped."""
    resampler = AudioResampler(format="s16", layout="mono", rate=avatar.rate)
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        try:
            outs = resampler.resample(frame)
        except Exception as e:  # noqa: BLE001 - a frame PyAV cannot convert (a hostile peer's): skipped
            log.debug("microphone frame skipped: %s: %s", type(e).__name__, e)
            resampler = AudioResampler(format="s16", layout="mono", rate=avatar.rate)
            continue
        for out in outs:
            pcm = out.to_ndarray().reshape(-1).astype(np.float32) / 32768.0  # [1, n] s16 -> [n]
            try:
                avatar.push(pcm)
            except AudioFull:
                log.debug("microphone audio over the session's lead: dropped")
        wake()
