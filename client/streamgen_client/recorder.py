"""Record a session to mp4 with PyAV: H.264 (or MPEG-4 part 2) video + AAC audio, and read it back."""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from typing import Any

import av
import numpy as np

from .base import StreamClient
from .keyscript import KeyScript
from .media import AudioChunk, VideoFrame

VIDEO_TB = Fraction(1, 90000)  # the RTP / MPEG video clock: exact for 8, 16, 24, 25, 30 fps
# AAC needs the first audio chunk to know its format; a model without audio never sends one.
FIRST_AUDIO_WAIT_S = 5.0
_LAYOUTS = {1: "mono", 2: "stereo"}


def _video_codec() -> str:
    for name in ("libx264", "h264", "mpeg4"):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 - this FFmpeg build lacks the encoder
            continue
    raise RuntimeError("PyAV's FFmpeg has neither an H.264 nor an MPEG-4 encoder")


class Mp4Recorder:
    """Synchronous mp4 writer (the project's one; ``streamgen generate`` and training samples use it too).

    Timestamps (microseconds) are taken relative to the first video frame. Video keeps each frame's
    timestamp (strictly increasing; a frame that is not later is dropped and counted in
    ``skipped_frames``). Audio is written contiguously; a gap in its timestamps becomes silence, an
    overlap is trimmed. ``write_video`` / ``write_audio`` append whole chunks at the stream's own clock,
    for a generator that has no timestamps.
    """

    def __init__(self, path: str, *, fps: float, width: int, height: int,
                 sample_rate: int | None = None, channels: int = 0, bit_rate: int = 2_000_000,
                 start_us: int | None = None):
        self.path, self.fps = str(path), fps
        self._out = av.open(self.path, "w", format="mp4")
        # yuv420p needs even sizes; an odd row / column is cropped.
        self.width, self.height = width - width % 2, height - height % 2
        codec = _video_codec()
        self._v = self._out.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        self._v.width, self._v.height, self._v.pix_fmt = self.width, self.height, "yuv420p"
        self._v.time_base = VIDEO_TB
        self._v.bit_rate = bit_rate
        if codec == "libx264":
            self._v.options = {"preset": "veryfast", "crf": "20"}
        self._a = None
        self.sample_rate, self.channels = sample_rate, channels
        if sample_rate:
            if channels not in _LAYOUTS:
                raise ValueError(f"audio with {channels} channels: the recorder writes 1 or 2")
            self._a = self._out.add_stream("aac", rate=sample_rate)
            self._a.layout = _LAYOUTS[channels]
        self._t0: int | None = start_us  # media time that becomes 0 in the file
        self._last_pts = -1
        self._samples = 0  # audio samples written
        self.video_frames = 0
        self.skipped_frames = 0  # frames not later than the previous one (not written)
        # Frame periods with no frame between two written frames. Over WebRTC the server stamps frames
        # with its wall clock, so a stall (generation slower than real time, a pause) moves media time
        # on without frames: a recording of N s then holds fewer than N * fps frames, none of them dropped.
        self.gap_frames = 0

    def add_video(self, frame: VideoFrame) -> bool:
        if self._t0 is None:
            self._t0 = frame.timestamp_us
        pts = round((frame.timestamp_us - self._t0) / 1e6 / VIDEO_TB)
        if pts <= self._last_pts:
            self.skipped_frames += 1
            return False
        if self._last_pts >= 0:
            self.gap_frames += max(0, round(float((pts - self._last_pts) * VIDEO_TB) * self.fps) - 1)
        img = np.ascontiguousarray(frame.image[: self.height, : self.width])  # crop to even [H, W, 3]
        vf = av.VideoFrame.from_ndarray(img, format="rgb24")
        vf.pts, vf.time_base = pts, VIDEO_TB
        for pkt in self._v.encode(vf):
            self._out.mux(pkt)
        self._last_pts = pts
        self.video_frames += 1
        return True

    def add_audio(self, chunk: AudioChunk) -> None:
        if self._a is None or self._t0 is None:
            return  # audio before the first video frame is not recorded
        if chunk.sample_rate != self.sample_rate or chunk.samples.shape[1] != self.channels:
            raise ValueError(f"audio chunk {chunk.sample_rate} Hz x {chunk.samples.shape[1]} does not match the "
                             f"recorder's {self.sample_rate} Hz x {self.channels}")
        start = round((chunk.timestamp_us - self._t0) / 1e6 * self.sample_rate)
        samples = chunk.samples
        if start > self._samples:  # gap: fill with silence
            samples = np.concatenate([np.zeros((start - self._samples, self.channels), np.float32), samples])
        elif start < self._samples:  # overlap (or audio that began before the video): trim
            samples = samples[self._samples - start:]
        if len(samples) == 0:
            return
        planar = np.ascontiguousarray(samples.T.astype(np.float32))  # [S, C] -> [C, S] for fltp
        af = av.AudioFrame.from_ndarray(planar, format="fltp", layout=_LAYOUTS[self.channels])
        af.sample_rate, af.pts, af.time_base = self.sample_rate, self._samples, Fraction(1, self.sample_rate)
        for pkt in self._a.encode(af):
            self._out.mux(pkt)
        self._samples += len(samples)

    def accounting(self) -> dict[str, int]:
        """Where the frames of the recorded span went: written, not later than the previous one, and the
        frame periods no frame arrived for (``gap_frames``); written + gap_frames = the span in frames."""
        return {"written": self.video_frames, "not_later": self.skipped_frames, "gap_frames": self.gap_frames,
                "span_frames": round(self.video_seconds * self.fps) + (1 if self.video_frames else 0)}

    def write_video(self, frames: np.ndarray) -> None:
        """Frames uint8 ``[T, H, W, 3]`` that follow the previous ones at ``fps``."""
        for image in frames:
            n = self.video_frames + self.skipped_frames
            self.add_video(VideoFrame(image=image, timestamp_us=round(n * 1e6 / self.fps)))

    def write_audio(self, samples: np.ndarray, sample_rate: int) -> None:
        """Samples float32 ``[S, C]`` in [-1, 1] that follow the previous ones."""
        if self._a is None:
            raise ValueError("this recorder was opened without an audio stream (sample_rate=None)")
        self.add_audio(AudioChunk(samples=samples, sample_rate=sample_rate,
                                  timestamp_us=round(self._samples * 1e6 / sample_rate)))

    @property
    def video_seconds(self) -> float:
        return 0.0 if self._last_pts < 0 else float(self._last_pts * VIDEO_TB)

    @property
    def audio_seconds(self) -> float:
        return self._samples / self.sample_rate if self.sample_rate else 0.0

    def close(self) -> None:
        for stream in (self._v, self._a):
            if stream is not None:
                for pkt in stream.encode():
                    self._out.mux(pkt)
        self._out.close()

    def __enter__(self) -> "Mp4Recorder":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def probe(path: str) -> dict[str, Any]:
    """Decode an mp4 completely and report what is really in it."""
    report: dict[str, Any] = {"path": path}
    with av.open(path) as c:
        if c.streams.video:
            s = c.streams.video[0]
            pts = [f.pts for f in c.decode(video=0)]
            # The last frame lasts one frame interval (the median one: dropped frames leave longer gaps).
            step = float(np.median(np.diff(pts)) * s.time_base) if len(pts) > 1 else 0.0
            dur = float((pts[-1] - pts[0]) * s.time_base) + step if pts else 0.0
            report["video"] = {"codec": s.codec_context.name, "frames": len(pts), "width": s.width,
                               "height": s.height, "fps": 1.0 / step if step else 0.0, "duration_s": dur}
    with av.open(path) as c:
        if c.streams.audio:
            s = c.streams.audio[0]
            n, peak = 0, 0.0
            for f in c.decode(audio=0):
                a = f.to_ndarray()
                n += f.samples
                peak = max(peak, float(np.abs(a).max()) if a.size else 0.0)
            report["audio"] = {"codec": s.codec_context.name, "sample_rate": s.sample_rate,
                               "channels": s.channels, "samples": n, "duration_s": n / s.sample_rate,
                               "peak": peak}
    return report


async def record(client: StreamClient, path: str, seconds: float, timeout: float | None = None,
                 keys: KeyScript | None = None, speech: tuple[Any, int] | None = None) -> dict[str, Any]:
    """Record ``seconds`` of the session's media time to ``path``; return ``probe(path)`` and what went
    missing. ``keys``: a key script played from the first frame on (``keyscript``). ``speech``: (samples,
    rate) sent to an avatar model from the start (``StreamClient.send_audio``)."""
    if client.info is None:
        raise RuntimeError("the session has not started")
    talker = (asyncio.create_task(client.send_audio(*speech), name="streamgen-speech")
              if speech is not None else None)
    deadline = time.monotonic() + (timeout if timeout is not None else 3 * seconds + 30)
    pool = ThreadPoolExecutor(1, thread_name_prefix="streamgen-recorder")  # PyAV muxing from one thread
    loop = asyncio.get_running_loop()

    def left() -> float:
        return max(0.0, deadline - time.monotonic())

    first = await client.next_frame(left())
    if first is None:
        raise ConnectionError("the session ended before its first video frame")
    player = asyncio.create_task(keys.play(client), name="streamgen-keys") if keys is not None else None
    audio0: AudioChunk | None = None
    if client.transport == "webrtc" or client.info.sample_rate:
        try:
            audio0 = await client.next_audio(min(FIRST_AUDIO_WAIT_S, left()))
        except asyncio.TimeoutError:
            audio0 = None
    h, w = first.image.shape[:2]  # [H, W, 3]
    rec = Mp4Recorder(path, fps=client.info.fps, width=w, height=h,
                      sample_rate=audio0.sample_rate if audio0 else None,
                      channels=audio0.samples.shape[1] if audio0 else 0, start_us=first.timestamp_us)

    async def write(fn: Any, item: Any) -> Any:
        return await loop.run_in_executor(pool, fn, item)

    async def video() -> None:
        frame: VideoFrame | None = first
        while frame is not None and frame.timestamp_us - first.timestamp_us < seconds * 1e6:
            await write(rec.add_video, frame)
            frame = await client.next_frame(left())

    async def audio() -> None:
        chunk: AudioChunk | None = audio0
        while chunk is not None and rec.audio_seconds < seconds:
            await write(rec.add_audio, chunk)
            chunk = await client.next_audio(left())

    try:
        await asyncio.gather(video(), audio() if audio0 else asyncio.sleep(0))
    except asyncio.TimeoutError:
        raise TimeoutError(f"recording {seconds} s did not finish in time: video {rec.video_seconds:.2f} s, "
                           f"audio {rec.audio_seconds:.2f} s") from None
    finally:
        for task in (player, talker):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await loop.run_in_executor(pool, rec.close)
        pool.shutdown()
    report = await asyncio.to_thread(probe, path)
    report["frames"] = rec.accounting()
    if speech is not None:
        report["speech_sent_s"] = round(speech[0].shape[0] / speech[1], 3)
    if keys is not None:
        report["key_edges_sent"] = sum(1 for e in keys.edges if e.t_s < seconds)
    return report
