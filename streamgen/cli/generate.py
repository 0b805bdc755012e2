"""``streamgen generate --model avatar --audio in.wav [--reference face.png]``: an avatar video driven by a WAV,
with that speech as its sound track.

The speech goes into the session block by block as the server feeds a live voice (``Session.step(audio=...)``:
``streamgen.audio_features.SpeechInput`` computes the features, the same path as ``streamgen serve``), each block
getting the speech it needs up to its look-ahead; the sound written beside each block is the speech that drove
it (``SpeechInput.driving``), so the mp4's voice and face line up sample for sample. The inputs are checked
before the model loads: a bad one is one line and exit code 2.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from streamgen.cli.checks import UsageError


# Blocks `generate` writes when neither --blocks nor --audio says how many.
DEFAULT_BLOCKS = 20


@dataclass(kw_only=True)
class AvatarInputs:
    speech: np.ndarray | None = None  # float32 mono [S] at the WAV's own rate, resampled once the model is known
    rate: int = 0  # the WAV's sample rate
    reference: np.ndarray | None = None  # uint8 [H, W, 3] as read


def read_avatar_inputs(audio: str | None, reference: str | None) -> AvatarInputs:
    """``--audio`` and ``--reference`` read and checked (UsageError naming the value); nothing given: empty."""
    out = AvatarInputs()
    if audio is not None:
        from streamgen_client.speech import read_wav

        path = Path(audio)
        if not path.is_file():
            raise UsageError(f"--audio {audio}: no such file")
        try:
            samples, out.rate = read_wav(str(path))  # [S, C]
        except ValueError as e:
            raise UsageError(f"--audio {audio}: {str(e).removeprefix(f'{path}: ')}") from None
        if samples.shape[0] == 0:
            raise UsageError(f"--audio {audio}: the WAV holds no samples")
        out.speech = samples.mean(axis=1)  # [S, C] -> [S]
    if reference is not None:
        from streamgen.image_condition import load_image

        if not Path(reference).is_file():
            raise UsageError(f"--reference {reference}: no such file")
        try:
            out.reference = load_image(reference)
        except Exception as e:  # noqa: BLE001 - whatever PIL makes of the file: not an image it reads
            raise UsageError(f"--reference {reference}: not an image PIL reads ({type(e).__name__})") from None
    return out


def check_avatar_model(config: Any, model: str, inputs: AvatarInputs, audio: str | None, reference: str | None) -> None:
    """``--audio`` / ``--reference`` need a model that takes speech (``config.audio_in``)."""
    if config.audio_in is None and (audio is not None or reference is not None):
        flag, value = ("--audio", audio) if audio is not None else ("--reference", reference)
        raise UsageError(f"{flag} {value}: --model {model} takes no speech; use an avatar model (--model avatar)")


def blocks_for(config: Any, samples: int) -> int:
    """Blocks whose frames the speech covers (``samples`` at the speech-in rate)."""
    return max(1, math.ceil(samples / (config.frames_per_block * config.speech_samples_per_frame)))


def speech_per_block(config: Any, pcm: np.ndarray) -> Iterator[np.ndarray | None]:
    """What to push before each block, as the server feeds a live voice: the first block gets its own speech
    and its look-ahead (``radius`` latent frames), each later block one block more; None once it is all in."""
    spf, n, radius = config.speech_samples_per_frame, config.frames_per_block, config.audio_in.radius
    first = (n + radius) * spf
    yield pcm[:first]
    for start in range(first, pcm.size, n * spf):
        yield pcm[start : start + n * spf]
    while True:
        yield None


def generate_avatar(pipe: Any, session: Any, inputs: AvatarInputs, blocks: int | None, mp4: Any,
                    progress: Any = None) -> int:
    """Step ``session`` (an avatar) through the speech into ``mp4`` (frames and the driving speech); returns the
    blocks generated (``blocks``, else as many as the speech covers, else DEFAULT_BLOCKS of silence)."""
    from streamgen_client.speech import to_mono

    from streamgen.image_condition import fit_image

    config = pipe.config
    rate = config.audio_in.sample_rate
    pcm = np.zeros(0, np.float32) if inputs.speech is None else to_mono(inputs.speech, inputs.rate, rate)  # [S]
    if inputs.reference is not None:
        session.set_reference(fit_image(inputs.reference, pipe.height, pipe.width))  # [H, W, 3]
    if blocks is None:
        total = blocks_for(config, pcm.size) if inputs.speech is not None else DEFAULT_BLOCKS
    else:
        total = blocks
    feed = speech_per_block(config, pcm)
    for _ in range(total):
        chunk = session.step(audio=next(feed))
        start = session.next_frame - config.frames_per_block
        mp4.write_video(chunk.video)
        mp4.write_audio(session.speech.driving(start, config.frames_per_block).numpy()[:, None], rate)  # [S] -> [S, 1]
        if progress is not None:
            progress.update(1)
    return total
