"""Decoded media handed to the user: video frames and audio chunks, with their media timestamps."""
from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np

from .binary import MediaHeader, MediaKind
from .protocol import ErrorCode, ProtocolError


@dataclass(frozen=True, kw_only=True)
class VideoFrame:
    image: np.ndarray  # uint8 [H, W, 3] RGB
    timestamp_us: int  # media time since the session's first frame
    block_index: int | None = None  # known over WebSocket; None over WebRTC
    frame_index: int | None = None

    @property
    def time(self) -> float:
        return self.timestamp_us / 1e6


@dataclass(frozen=True, kw_only=True)
class AudioChunk:
    samples: np.ndarray  # float32 [S, C] in [-1, 1]
    sample_rate: int
    timestamp_us: int  # media time of the first sample
    block_index: int | None = None

    @property
    def time(self) -> float:
        return self.timestamp_us / 1e6

    @property
    def duration(self) -> float:
        return self.samples.shape[0] / self.sample_rate


class JpegDecoder:
    """One MJPEG decoder per connection (PyAV); not thread-safe, so used from one worker thread."""

    def __init__(self) -> None:
        self._ctx = av.CodecContext.create("mjpeg", "r")

    def __call__(self, data: bytes) -> np.ndarray:
        try:
            frames = self._ctx.decode(av.Packet(data))
        except av.error.FFmpegError as e:
            raise ProtocolError(ErrorCode.BAD_FIELD, f"video payload of {len(data)} bytes is not a JPEG: {e}") from None
        if len(frames) != 1:
            raise ProtocolError(ErrorCode.BAD_FIELD, f"video payload decoded to {len(frames)} frames, want 1")
        return frames[0].to_ndarray(format="rgb24")  # [H, W, 3] uint8


def decode_pcm(header: MediaHeader, payload: bytes | memoryview) -> np.ndarray:
    """Interleaved PCM payload -> float32 [S, C]."""
    width = 2 if header.kind is MediaKind.AUDIO_S16 else 4
    c = header.channels
    if c < 1 or len(payload) % (width * c):
        raise ProtocolError(ErrorCode.BAD_FIELD, f"audio payload of {len(payload)} bytes is not whole "
                            f"{width}-byte samples of {c} channel(s)")
    if header.kind is MediaKind.AUDIO_S16:
        flat = np.frombuffer(payload, dtype="<i2").astype(np.float32) / 32768.0
    else:
        flat = np.frombuffer(payload, dtype="<f4").astype(np.float32)
    return flat.reshape(-1, c)  # [S*C] -> [S, C] (interleaved)


def decode_media(header: MediaHeader, payload: bytes | memoryview, jpeg: JpegDecoder) -> VideoFrame | AudioChunk:
    if header.kind is MediaKind.VIDEO_JPEG:
        return VideoFrame(image=jpeg(bytes(payload)), timestamp_us=header.timestamp_us,
                          block_index=header.block_index, frame_index=header.frame_index)
    return AudioChunk(samples=decode_pcm(header, payload), sample_rate=header.sample_rate,
                      timestamp_us=header.timestamp_us, block_index=header.block_index)
