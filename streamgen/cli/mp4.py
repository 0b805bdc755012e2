"""Write streamed chunks to an mp4 with PyAV: H.264 (or MPEG-4 Part 2 where libx264 is missing) video,
AAC audio when the stream has sound."""
from __future__ import annotations

from fractions import Fraction

import av
import numpy as np


def _video_codec() -> str:
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


class Mp4Writer:
    def __init__(self, path: str, *, fps: float, width: int, height: int, sample_rate: int | None = None, channels: int = 1) -> None:
        self.container = av.open(str(path), mode="w")
        rate = Fraction(fps).limit_denominator(1000)
        self.video = self.container.add_stream(_video_codec(), rate=rate)
        # yuv420p needs even sizes; pad by one pixel where needed.
        self.width, self.height = width + width % 2, height + height % 2
        self.video.width, self.video.height = self.width, self.height
        self.video.pix_fmt = "yuv420p"
        self.audio = None
        if sample_rate:
            self.audio = self.container.add_stream("aac", rate=sample_rate)
            self.audio.layout = "mono" if channels == 1 else "stereo"
            self.channels = channels
            self.audio_pts = 0

    def write_video(self, frames: np.ndarray) -> None:
        """frames uint8 ``[T, H, W, 3]``."""
        for frame in frames:
            if frame.shape[0] != self.height or frame.shape[1] != self.width:
                frame = np.pad(frame, ((0, self.height - frame.shape[0]), (0, self.width - frame.shape[1]), (0, 0)), mode="edge")
            for packet in self.video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                self.container.mux(packet)

    def write_audio(self, samples: np.ndarray, sample_rate: int) -> None:
        """samples float32 ``[S, C]`` in [-1, 1]."""
        if self.audio is None:
            raise ValueError("this writer was opened without an audio stream (sample_rate=None)")
        planar = np.ascontiguousarray(np.clip(samples, -1, 1).T.astype(np.float32))  # [C, S]
        frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout=self.audio.layout.name)
        frame.sample_rate = sample_rate
        frame.pts = self.audio_pts
        self.audio_pts += samples.shape[0]
        for packet in self.audio.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        for stream in (self.video, self.audio):
            if stream is not None:
                for packet in stream.encode(None):
                    self.container.mux(packet)
        self.container.close()

    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
