"""Speech in for avatars: log-mel features of 16 kHz audio at the video latent rate, computed as a stream.

Layout (``AudioInConfig``): mel frame ``j`` is the Hann-windowed power spectrum of samples
``[j * hop - (n_fft - hop), j * hop + hop)`` (samples before the stream start are silence), mapped to
``n_mels`` HTK mel bands (``torchaudio.functional.melscale_fbanks``), then ``log`` and a fixed affine map.
Latent frame ``f`` owns mel frames ``f * m .. f * m + m - 1`` (``m = samples per latent frame / hop``), so
its features need exactly the audio up to the end of frame ``f``. They are grouped into
``tokens_per_frame`` tokens of ``m / tokens_per_frame`` concatenated mel frames: ``[tpf, token_dim]``.

A generated frame ``f`` sees the tokens of frames ``f - radius .. f + radius`` (``frame_windows``), so a
stream needs ``radius`` latent frames of look-ahead audio (the avatar preset: 2 x 125 ms = 250 ms).

:class:`SpeechFeatureStream` keeps its state explicit (the unconsumed samples and the mel frames of an
unfinished latent frame), so audio pushed in chunks of any size gives the same features as the whole
signal pushed at once. :class:`SpeechInput` is a session's speech: features by stream frame, silence
before the speech starts and on underrun, a bound on how far ahead a client may send.
"""
from __future__ import annotations

import numpy as np
import torch
import torchaudio

from streamgen.config import ModelConfig

# log-mel floor and affine map: digital silence sits at (log(1e-6) + 4) / 4 = -2.45; espeak-ng speech at
# 0.3 peak spans about -2.5 .. 2 (measured on the synthesised set), so values stay O(1) for the Linear
# embedding without a data-dependent statistic in the file format.
LOG_FLOOR = 1e-6
LOG_SHIFT = 4.0
LOG_SCALE = 4.0


def as_pcm(pcm) -> torch.Tensor:
    """Any mono PCM (float in [-1, 1] or int16; ``[S]`` or ``[S, 1]``) as float32 ``[S]``; NaN / inf become
    silence and values are clipped to [-1, 1] (audio from the network is hostile)."""
    x = torch.as_tensor(np.asarray(pcm) if not torch.is_tensor(pcm) else pcm)
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 1:
        raise ValueError(f"speech PCM of shape {tuple(x.shape)} must be mono: [S] or [S, 1]")
    if x.dtype == torch.int16:
        x = x.float() / 32768.0
    elif not x.is_floating_point():
        raise ValueError(f"speech PCM of dtype {x.dtype} must be float (in [-1, 1]) or int16")
    return torch.nan_to_num(x.float(), nan=0.0, posinf=0.0, neginf=0.0).clamp_(-1.0, 1.0)


class LogMel:
    """The per-frame analysis: ``frames [N, n_fft]`` -> normalised log-mel ``[N, n_mels]``."""

    def __init__(self, config: ModelConfig) -> None:
        a = config.audio_in
        if a is None:
            raise ValueError(f"model {config.name!r} has no audio_in")
        self.n_fft, self.hop, self.n_mels = a.n_fft, a.hop, a.n_mels
        self.window = torch.hann_window(a.n_fft, periodic=True, dtype=torch.float64)
        self.fbank = torchaudio.functional.melscale_fbanks(
            a.n_fft // 2 + 1, 0.0, a.sample_rate / 2, a.n_mels, a.sample_rate, norm=None, mel_scale="htk"
        ).double()  # [n_freqs, n_mels]

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        # float64 inside: each frame's value then does not depend on how many frames share the call.
        spec = torch.fft.rfft(frames.double() * self.window, dim=-1).abs().square()  # [N, n_freqs]
        mel = spec @ self.fbank  # [N, n_mels]
        return ((torch.log(mel + LOG_FLOOR) + LOG_SHIFT) / LOG_SCALE).float()


class SpeechFeatureStream:
    """Streaming features: ``push(pcm)`` returns the tokens ``[k, tpf, token_dim]`` of every latent frame
    completed by this chunk (k may be 0). State: unconsumed samples and the pending mel frames."""

    def __init__(self, config: ModelConfig) -> None:
        a = config.audio_in
        self.logmel = LogMel(config)
        self.tpf = a.tokens_per_frame
        self.mel_per_frame = config.speech_samples_per_frame // a.hop
        self.token_dim = config.speech_token_dim
        self.samples = torch.zeros(a.n_fft - a.hop)  # the left context: silence before the stream
        self.pending = torch.zeros(0, a.n_mels)  # mel frames of the unfinished latent frame
        self.frames_out = 0
        self.samples_in = 0

    def push(self, pcm) -> torch.Tensor:
        x = as_pcm(pcm)
        self.samples_in += x.numel()
        buf = torch.cat([self.samples, x])
        n_fft, hop = self.logmel.n_fft, self.logmel.hop
        count = (buf.numel() - n_fft) // hop + 1 if buf.numel() >= n_fft else 0
        if count:
            frames = buf.unfold(0, n_fft, hop)[:count]  # [count, n_fft]
            self.pending = torch.cat([self.pending, self.logmel(frames)])  # [P, n_mels]
            buf = buf[count * hop :]
        self.samples = buf.clone()
        k = self.pending.shape[0] // self.mel_per_frame
        done = self.pending[: k * self.mel_per_frame]
        self.pending = self.pending[k * self.mel_per_frame :]
        self.frames_out += k
        return done.reshape(k, self.tpf, self.token_dim)  # [k*m, n_mels] -> [k, tpf, (m / tpf) * n_mels]


def speech_features(config: ModelConfig, pcm) -> torch.Tensor:
    """Features ``[T, tpf, token_dim]`` of a whole signal (its last partial latent frame dropped)."""
    return SpeechFeatureStream(config).push(pcm)


def silence_token(config: ModelConfig) -> torch.Tensor:
    """The features of one latent frame of silence ``[tpf, token_dim]`` (frames outside the speech)."""
    return speech_features(config, torch.zeros(config.speech_samples_per_frame))[0]


def frame_windows(features: torch.Tensor, first: int, start: int, n: int, radius: int, silence: torch.Tensor) -> torch.Tensor:
    """Windows ``[n, (2 radius + 1) * tpf, D]`` for stream frames ``start .. start + n - 1``: frame ``f``
    gets the tokens of frames ``f - radius .. f + radius``; ``features [T, tpf, D]`` cover stream frames
    ``first .. first + T - 1`` and every other frame is ``silence [tpf, D]``."""
    lo, hi = start - radius, start + n + radius
    rows = [features[f - first] if 0 <= f - first < features.shape[0] else silence for f in range(lo, hi)]
    span = torch.stack(rows)  # [n + 2r, tpf, D]
    win = span.unfold(0, 2 * radius + 1, 1)  # [n, tpf, D, 2r + 1]
    return win.permute(0, 3, 1, 2).flatten(1, 2)  # [n, 2r+1, tpf, D] -> [n, (2r+1) * tpf, D]


class SpeechInput:
    """A session's speech in. Sample 0 of the pushed audio starts stream frame ``origin`` (set when the
    first block is generated); frames before it, and frames the client has not sent audio for when a block
    needs them (underrun), are silence: on underrun the extractor is fed zeros, so later audio continues
    after the generated frames and the extractor's signal stays continuous. Audio more than ``max_ahead``
    latent frames past the next generated frame is dropped (``dropped_samples``): memory stays bounded."""

    def __init__(self, config: ModelConfig, *, max_ahead: int = 80) -> None:
        self.config = config
        self.stream = SpeechFeatureStream(config)
        self.silence = silence_token(config)
        self.radius = config.audio_in.radius
        self.max_ahead = max_ahead  # 80 latent frames = 10 s at the avatar preset's rate
        self.origin: int | None = None
        self.features: dict[int, torch.Tensor] = {}  # stream frame -> [tpf, D]
        self.dropped_samples = 0
        self.consumed = 0  # first stream frame not yet generated
        # The extractor's signal from frame ``signal_frame`` on (pushed audio and underrun silence): what drove
        # each frame, handed out once by ``driving`` (a server plays it back beside the frames it drove).
        self.signal = torch.zeros(0)
        self.signal_frame = 0

    @property
    def end(self) -> int:
        """One past the last stream frame with features."""
        return (self.origin or 0) + self.stream.frames_out

    def start(self, frame: int) -> None:
        if self.origin is None:
            self.origin = frame
            self.consumed = frame
            self.signal_frame = frame

    def buffered_samples(self) -> int:
        """Samples received for frames not generated yet (from ``consumed`` on)."""
        if self.origin is None:
            return 0
        return (self.end - self.consumed) * self.config.speech_samples_per_frame + self._partial()

    def push(self, pcm) -> None:
        x = as_pcm(pcm)
        if self.origin is None:
            raise RuntimeError("SpeechInput.push before start(): the session sets the origin on its first block")
        room = (self.consumed + self.max_ahead - self.end) * self.config.speech_samples_per_frame - self._partial()
        if x.numel() > max(room, 0):
            self.dropped_samples += x.numel() - max(room, 0)
            x = x[: max(room, 0)]
        self._feed(x)

    def _feed(self, x: torch.Tensor) -> None:
        self.signal = torch.cat([self.signal, x])
        self._store(self.stream.push(x))

    def _partial(self) -> int:
        """Samples received of the unfinished latent frame."""
        return self.stream.samples_in - self.stream.frames_out * self.config.speech_samples_per_frame

    def _store(self, feats: torch.Tensor) -> None:
        first = self.end - feats.shape[0]
        for i in range(feats.shape[0]):
            self.features[first + i] = feats[i]

    def windows(self, start: int, n: int) -> torch.Tensor:
        """Windows ``[1, n, R, D]`` of frames ``start ..``; fills an underrun up to ``start + n + radius``
        with silence first. A block wholly before the speech's origin (the reference image's sink block)
        hears silence only, as in training. Stored features of frames the session may replay are kept
        (``prune``)."""
        if self.origin is None or start + n <= self.origin:  # a block before the speech (the reference): silence
            return self.silence.repeat(1, n, 2 * self.radius + 1, 1)  # [tpf, D] -> [1, n, R, D]
        need = start + n + self.radius
        if self.end < need:
            missing = (need - self.end) * self.config.speech_samples_per_frame - self._partial()
            self._feed(torch.zeros(missing))
        self.consumed = max(self.consumed, start + n)
        lo = start - self.radius
        feats = [self.features.get(f, self.silence) for f in range(lo, need)]
        return frame_windows(torch.stack(feats), lo, start, n, self.radius, self.silence)[None]

    def driving(self, start: int, n: int) -> torch.Tensor:
        """The signal ``[n * samples_per_frame]`` that drove frames ``start .. start + n - 1`` (silence for frames
        before the speech); the signal before it is forgotten, so each stretch is handed out once. Call after
        the block's ``windows`` (which fills an underrun)."""
        spf = self.config.speech_samples_per_frame
        out = torch.zeros(n * spf)
        lo = (start - self.signal_frame) * spf  # the block's first sample in ``signal`` (< 0: before the speech)
        src = self.signal[max(lo, 0) : max(lo + n * spf, 0)]
        out[max(-lo, 0) : max(-lo, 0) + src.numel()] = src
        if start + n > self.signal_frame:
            self.signal = self.signal[max(lo + n * spf, 0) :]
            self.signal_frame = start + n
        return out

    def prune(self, keep: set[int] | range, before: int) -> None:
        """Forget features of frames before ``before`` that are not in ``keep``."""
        for f in [f for f in self.features if f < before and f not in keep]:
            del self.features[f]
