"""A session's output buffer: the bounded hand-off between the engine thread and the transport.

The engine thread pushes whole blocks (``push_block``); the transport's tasks on the event loop take
frames one at a time at the pace of the stream. Bounded everywhere: a frame that falls more than
``max_age_s`` behind the time it would play at if the consumer kept pace is dropped (counted), so the
stream stays live after a stall instead of lagging; audio beyond that age is dropped too. For WebRTC, frames become ``av.VideoFrame``s and audio is resampled to
48 kHz stereo s16 here, on the engine thread; for WebSocket the model's own audio is kept per block.
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

import av
import numpy as np

WEBRTC_RATE = 48_000  # Opus runs at 48 kHz; aiortc would resample anything else anyway


class BufferClosed(Exception):
    """The session ended while a consumer waited for media."""


@dataclass
class VideoItem:
    frame: np.ndarray  # uint8 [H, W, 3]
    block_index: int
    index_in_block: int
    frame_no: int  # frame number in the stream (counts dropped frames too)
    ready_t: float  # time.monotonic() when its block came out of the model
    due_t: float  # when it plays if the consumer keeps pace: ready_t + (frames queued ahead of it) / fps
    av_frame: av.VideoFrame | None = None  # made on the engine thread for WebRTC


@dataclass
class AudioBlock:
    samples: np.ndarray  # float32 [S, C] at sample_rate
    sample_rate: int
    block_index: int
    first_sample: int  # sample number in the stream of samples[0]


class _Waiter:
    """An asyncio.Event that other threads may set (through the loop)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.event = asyncio.Event()

    def notify(self) -> None:
        try:
            self.loop.call_soon_threadsafe(self.event.set)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass


class OutputBuffer:
    def __init__(self, loop: asyncio.AbstractEventLoop, *, fps: float, frames_per_block: int,
                 max_age_s: float, ahead_blocks: int = 1, webrtc: bool = True,
                 on_consumed: Callable[[], None] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.fps = fps
        self.frames_per_block = frames_per_block
        self.max_age_s = max_age_s
        # Ahead target for the engine and hard cap: a few blocks or max_age worth, whichever is larger.
        self.ahead_frames = ahead_blocks * frames_per_block
        self.capacity = max(self.ahead_frames + frames_per_block, int(max_age_s * fps) + frames_per_block)
        self.webrtc = webrtc  # WebRTC: av.VideoFrames and 48 kHz PCM made here; else raw frames and audio blocks
        self._lock = threading.Lock()
        self._video: deque[VideoItem] = deque()
        self._audio_pcm: deque[np.ndarray] = deque()  # int16 [n, 2] at 48 kHz
        self._audio_pcm_len = 0
        self._audio_blocks: deque[AudioBlock] = deque(maxlen=max(2, int(max_age_s * fps / frames_per_block) + 2))
        self._video_wait = _Waiter(loop)
        self._audio_wait = _Waiter(loop)
        self._on_consumed = on_consumed
        self._resampler: av.AudioResampler | None = None
        self._resampler_key: tuple[int, int] | None = None
        self._frames_in = 0
        self._samples_in = 0
        self.dropped = 0
        self.audio_dropped_samples = 0
        self._pcm_out = 0  # 48 kHz samples taken by the audio track
        self.closed = False

    # ----- engine thread -------------------------------------------------------------------------
    def push_block(self, video: np.ndarray, audio: np.ndarray | None, sample_rate: int | None,
                   block_index: int, ready_t: float | None = None) -> None:
        ready_t = self.clock() if ready_t is None else ready_t
        pcm = None
        if audio is not None and sample_rate:
            if self.webrtc:
                pcm = self._to_48k(audio, sample_rate)
        avfs = [av.VideoFrame.from_ndarray(f, format="rgb24") if self.webrtc else None for f in video]  # f: [H, W, 3]
        with self._lock:
            if self.closed:
                return
            ahead = len(self._video)
            for i in range(video.shape[0]):
                due = ready_t + (ahead + i) / self.fps
                self._video.append(VideoItem(video[i], block_index, i, self._frames_in, ready_t, due, avfs[i]))
                self._frames_in += 1
            while len(self._video) > self.capacity:
                self._video.popleft()
                self.dropped += 1
            if audio is not None and sample_rate:
                if pcm is not None and len(pcm):
                    self._audio_pcm.append(pcm)
                    self._audio_pcm_len += len(pcm)
                    self._trim_pcm()
                if not self.webrtc:
                    self._audio_blocks.append(AudioBlock(np.ascontiguousarray(audio, np.float32), sample_rate,
                                                         block_index, self._samples_in))
                self._samples_in += audio.shape[0]
        self._video_wait.notify()
        self._audio_wait.notify()

    def _to_48k(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        channels = audio.shape[1] if audio.ndim == 2 else 1
        key = (sample_rate, channels)
        if self._resampler is None or self._resampler_key != key:
            self._resampler = av.AudioResampler(format="s16", layout="stereo", rate=WEBRTC_RATE)
            self._resampler_key = key
        packed = np.ascontiguousarray(audio, dtype=np.float32).reshape(1, -1)  # [S, C] -> [1, S*C] interleaved
        frame = av.AudioFrame.from_ndarray(packed, format="flt", layout="mono" if channels == 1 else "stereo")
        frame.sample_rate = sample_rate
        out = [f.to_ndarray().reshape(-1, 2) for f in self._resampler.resample(frame)]  # [1, n*2] -> [n, 2]
        return np.concatenate(out) if out else np.zeros((0, 2), np.int16)

    def _trim_pcm(self) -> None:
        # The normal backlog (what the engine's gating lets queue up, as for video) plus max_age of lateness.
        cap = int(((self.ahead_frames + self.frames_per_block) / self.fps + self.max_age_s) * WEBRTC_RATE)
        while self._audio_pcm_len > cap and self._audio_pcm:
            extra = self._audio_pcm_len - cap
            head = self._audio_pcm[0]
            if len(head) <= extra:
                self._audio_pcm.popleft()
                self._audio_pcm_len -= len(head)
                self.audio_dropped_samples += len(head)
            else:
                self._audio_pcm[0] = head[extra:]
                self._audio_pcm_len -= extra
                self.audio_dropped_samples += extra

    def queued(self) -> int:
        """Video frames waiting to be sent (the engine generates while this is below ahead_frames)."""
        return len(self._video)

    def wants_block(self) -> bool:
        return not self.closed and len(self._video) < self.ahead_frames

    # ----- event loop ----------------------------------------------------------------------------
    def _pop_video(self) -> VideoItem | None:
        now = self.clock()
        with self._lock:
            # Stale: later than max_age behind its own schedule (the consumer stalled) while a newer frame
            # exists -> skip it and keep the stream live. Frames waiting their normal turn are never stale.
            while len(self._video) > 1 and now - self._video[0].due_t > self.max_age_s:
                self._video.popleft()
                self.dropped += 1
            item = self._video.popleft() if self._video else None
        if item is not None and self._on_consumed is not None:
            self._on_consumed()
        return item

    async def next_video(self) -> VideoItem:
        while True:
            if self.closed:
                raise BufferClosed()
            item = self._pop_video()
            if item is not None:
                return item
            self._video_wait.event.clear()
            await self._video_wait.event.wait()

    def take_pcm(self, n: int) -> np.ndarray | None:
        """``n`` samples of 48 kHz stereo s16 ([n, 2]); zero-padded when short; None when there are none."""
        with self._lock:
            if self._audio_pcm_len == 0:
                return None
            return self._take_pcm_locked(n)

    async def next_pcm(self, n: int) -> tuple[np.ndarray, int]:
        """The next ``n`` samples of 48 kHz stereo s16 ([n, 2]) once that many are queued (never padded: the
        avatar's voice waits for its block, server/pacing.py Playout), and the stream position of their first
        sample (samples taken and dropped before them)."""
        while True:
            if self.closed:
                raise BufferClosed()
            with self._lock:
                if self._audio_pcm_len >= n:
                    first = self._pcm_out + self.audio_dropped_samples
                    return self._take_pcm_locked(n), first
            self._audio_wait.event.clear()
            await self._audio_wait.event.wait()

    def _take_pcm_locked(self, n: int) -> np.ndarray:
        out = np.zeros((n, 2), np.int16)
        got = 0
        while got < n and self._audio_pcm:
            head = self._audio_pcm[0]
            k = min(n - got, len(head))
            out[got : got + k] = head[:k]
            got += k
            if k == len(head):
                self._audio_pcm.popleft()
            else:
                self._audio_pcm[0] = head[k:]
            self._audio_pcm_len -= k
        self._pcm_out += got
        return out

    async def next_audio_block(self) -> AudioBlock:
        while True:
            if self.closed:
                raise BufferClosed()
            with self._lock:
                block = self._audio_blocks.popleft() if self._audio_blocks else None
            if block is not None:
                return block
            self._audio_wait.event.clear()
            await self._audio_wait.event.wait()

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self._video.clear()
            self._audio_pcm.clear()
            self._audio_blocks.clear()
        self._video_wait.notify()
        self._audio_wait.notify()
