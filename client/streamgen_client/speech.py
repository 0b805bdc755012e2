"""Speech in for avatar models (docs/protocol.md): WAV files read with the standard library, resampled to the
model's speech-in rate (mono) with PyAV, and cut into the binary PCM messages the WebSocket transport sends
(s16le, at most ``MAX_AUDIO_IN_S`` each). Over WebRTC the same samples go up as an audio track
(``webrtc_client.SpeechTrack``)."""
from __future__ import annotations

import wave
from typing import Iterator

import av
import numpy as np

from .binary import MediaHeader, MediaKind, pack_media

# WebSocket speech goes up in 100 ms messages, at most this far ahead of real time (the server holds 8 s).
CHUNK_S = 0.1
LEAD_S = 1.0


def read_wav(path: str) -> tuple[np.ndarray, int]:
    """A PCM WAV file (8, 16, 24 or 32-bit integer samples, any rate and channel count) as float32 ``[S, C]``
    in [-1, 1] and its sample rate."""
    try:
        with wave.open(str(path), "rb") as w:
            width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as e:
        raise ValueError(f"{path}: not a PCM WAV file ({e})") from None
    if width == 1:
        flat = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 3:  # 24-bit: sign-extend each 3-byte little-endian sample into an int32
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)  # [S*C, 3]
        flat = ((b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8 >> 8).astype(np.float32) / 8388608.0
    elif width in (2, 4):
        flat = np.frombuffer(raw, f"<i{width}").astype(np.float32) / float(1 << (8 * width - 1))
    else:
        raise ValueError(f"{path}: {8 * width}-bit WAV samples are not supported (8, 16, 24 or 32-bit PCM)")
    return flat.reshape(-1, channels), rate  # [S*C] -> [S, C] (interleaved)


def to_mono(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """float32 ``[S, C]`` (or ``[S]``) at ``rate`` -> float32 mono ``[S']`` at ``target`` (channels averaged)."""
    x = np.asarray(samples, np.float32)
    mono = x.mean(axis=1) if x.ndim == 2 else x  # [S, C] -> [S]
    if rate == target or mono.size == 0:
        return np.ascontiguousarray(mono)
    frame = av.AudioFrame.from_ndarray(mono[None, :], format="flt", layout="mono")  # [1, S] packed
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="flt", layout="mono", rate=target)
    out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame) + resampler.resample(None)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


def pcm_messages(pcm: np.ndarray, rate: int, first_sample: int = 0, chunk_s: float = CHUNK_S) -> Iterator[bytes]:
    """Binary speech messages (s16le mono) of ``chunk_s`` each for float32 ``[S]`` at ``rate``; ``timestamp_us``
    counts from ``first_sample`` (the sender's own media time; the server plays speech in arrival order)."""
    step = max(1, int(rate * chunk_s))
    s16 = np.round(np.clip(pcm, -1.0, 1.0) * 32767.0).astype("<i2")
    for i, k in enumerate(range(0, s16.size, step)):
        hdr = MediaHeader(kind=MediaKind.AUDIO_S16, block_index=0, frame_index=i,
                          timestamp_us=round((first_sample + k) * 1e6 / rate), channels=1, sample_rate=rate)
        yield pack_media(hdr, s16[k : k + step].tobytes())
