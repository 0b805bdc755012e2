"""A streaming audio decoder with explicit state, and a streaming resampler to the delivery rate.

:class:`AudioPreviewDecoder` (for presets without a trained vocoder, like ``decoders/preview.py`` for
video): each audio latent frame gives the amplitudes of a few harmonic partials; amplitudes are ramped
linearly from the previous frame's over the frame's samples (no clicks at frame or chunk joins) and the
partials run with phase ``2 pi ((f * n) mod sr) / sr`` of the absolute sample index ``n`` (integer
arithmetic, so no phase drift over hours). The state is the previous amplitudes and the sample index.

:class:`StreamResampler`: torchaudio's windowed-sinc kernel (``torchaudio.transforms.Resample``) applied
chunk by chunk. The output is delayed by ``delay_frames`` polyphase frames (a few samples) so every
chunk has exactly ``len(chunk) * new / orig`` samples; after the leading zeros it equals
``torchaudio.functional.resample`` of the whole signal.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torchaudio


@dataclass(kw_only=True)
class AudioDecoderConfig:
    latent_channels: int = 128  # LTX-2 audio tokens are 128-d
    samples_per_latent: int = 960  # LTX-2: 24 kHz / 25 latents per second
    sample_rate: int = 24000  # native rate (LTX-2's vocoder)
    audio_channels: int = 1  # mono
    partials: int = 8  # harmonics per channel
    base_hz: int = 110  # fundamental (A2); harmonics must stay below Nyquist
    peak: float = 0.5  # the sum of all partials stays within +-peak
    seed: int = 0  # weights are drawn from this seed when not loaded

    def __post_init__(self) -> None:
        if self.base_hz * self.partials * 2 >= self.sample_rate:
            raise ValueError(f"AudioDecoderConfig: partials={self.partials} of base_hz={self.base_hz} reach the Nyquist "
                             f"frequency of sample_rate={self.sample_rate}")


@dataclass
class AudioDecoderState:
    """Amplitudes of the previous latent frame ``[B, channels, partials]`` and the next sample index."""

    prev: torch.Tensor | None = None
    sample_index: int = 0


class AudioPreviewDecoder(nn.Module):
    def __init__(self, config: AudioDecoderConfig) -> None:
        super().__init__()
        self.config = config
        g = torch.Generator().manual_seed(config.seed)
        out = config.audio_channels * config.partials
        self.to_amp = nn.Parameter(torch.randn(out, config.latent_channels, generator=g) / config.latent_channels**0.5)
        self.bias = nn.Parameter(torch.full((out,), -1.0))
        self.register_buffer("freqs", torch.arange(1, config.partials + 1, dtype=torch.int64) * config.base_hz, persistent=False)

    def init_state(self) -> AudioDecoderState:
        return AudioDecoderState()

    def samples_for(self, latent_frames: int) -> int:
        return latent_frames * self.config.samples_per_latent

    def decode(self, latents: torch.Tensor, state: AudioDecoderState) -> tuple[torch.Tensor, AudioDecoderState]:
        """latents ``[B, Fa, Ca]`` -> waveform ``[B, Fa * samples_per_latent, channels]`` (float32), new state."""
        cfg = self.config
        b, f, _ = latents.shape
        spl, ch, p = cfg.samples_per_latent, cfg.audio_channels, cfg.partials
        amp = torch.sigmoid(torch.einsum("oc,bfc->bfo", self.to_amp.float(), latents.float()) + self.bias.float())
        amp = amp.view(b, f, ch, p) * (cfg.peak / p)  # [B, Fa, ch, P]
        prev0 = state.prev if state.prev is not None else torch.zeros_like(amp[:, 0])
        prev = torch.cat([prev0[:, None], amp[:, :-1]], dim=1)  # [B, Fa, ch, P]
        ramp = torch.arange(1, spl + 1, dtype=torch.float32, device=latents.device) / spl  # [spl]
        env = prev[:, :, None] + (amp - prev)[:, :, None] * ramp[None, None, :, None, None]  # [B, Fa, spl, ch, P]
        n = torch.arange(state.sample_index, state.sample_index + f * spl, dtype=torch.int64, device=latents.device)
        phase = (n[:, None] * self.freqs[None, :]) % cfg.sample_rate  # [Fa*spl, P] exact integers
        tone = torch.sin(phase.double() * (2 * math.pi / cfg.sample_rate)).float().view(f, spl, 1, p)  # [Fa, spl, 1, P]
        wave = (env * tone[None]).sum(-1).reshape(b, f * spl, ch)  # [B, Fa*spl, ch]
        return wave, AudioDecoderState(prev=amp[:, -1].detach().clone(), sample_index=state.sample_index + f * spl)


@dataclass
class ResamplerState:
    """Input samples still needed ``[C, L]`` (starting at input index ``buffer_start``) and frames emitted."""

    buffer: torch.Tensor
    buffer_start: int
    frames_out: int = 0  # polyphase frames emitted, the leading delay frames included


class StreamResampler(nn.Module):
    """Chunked resampling ``orig -> new`` that equals whole-signal ``torchaudio.functional.resample``,
    delayed by ``delay_frames * new / gcd`` output samples."""

    def __init__(self, orig_freq: int, new_freq: int, channels: int = 1) -> None:
        super().__init__()
        self.orig_freq, self.new_freq, self.channels = orig_freq, new_freq, channels
        self.gcd = math.gcd(orig_freq, new_freq)
        self.o, self.m = orig_freq // self.gcd, new_freq // self.gcd  # input / output samples per frame
        self.identity = orig_freq == new_freq
        if self.identity:
            self.width, self.delay_frames = 0, 0
            return
        rs = torchaudio.transforms.Resample(orig_freq, new_freq)
        self.register_buffer("kernel", rs.kernel.detach().clone(), persistent=False)  # [m, 1, 2*width + o]
        self.width = rs.width
        # Frame q reads inputs [q*o - width, q*o + width + o); emitting it one block later needs d*o >= width.
        self.delay_frames = -(-self.width // self.o)

    @property
    def delay_samples(self) -> int:
        return self.delay_frames * self.m

    def init_state(self) -> ResamplerState:
        k = getattr(self, "kernel", None)
        device, dtype = (k.device, k.dtype) if k is not None else ("cpu", torch.float32)
        return ResamplerState(torch.zeros(self.channels, self.width, device=device, dtype=dtype), -self.width)

    def output_length(self, input_length: int) -> int:
        if input_length % self.o:
            raise ValueError(f"chunk of {input_length} samples is not a whole number of {self.o}-sample resampler frames")
        return input_length // self.o * self.m

    def process(self, chunk: torch.Tensor, state: ResamplerState) -> tuple[torch.Tensor, ResamplerState]:
        """chunk ``[S_in, C]`` -> ``[S_in * new / orig, C]`` and the new state."""
        count = self.output_length(chunk.shape[0]) // self.m  # frames to emit
        if self.identity:
            return chunk, state
        buffer = torch.cat([state.buffer, chunk.to(state.buffer.dtype).T], dim=1)  # [C, L]
        zeros = min(count, max(0, self.delay_frames - state.frames_out))  # leading delay frames
        q0 = state.frames_out + zeros - self.delay_frames  # first real frame to compute
        q1 = state.frames_out + count - self.delay_frames  # one past the last
        pieces = [torch.zeros(self.channels, zeros * self.m, dtype=buffer.dtype, device=buffer.device)]
        if q1 > q0:
            lo = q0 * self.o - self.width - state.buffer_start
            hi = (q1 - 1) * self.o + self.width + self.o - state.buffer_start
            seg = buffer[:, lo:hi]  # [C, (q1-q0-1)*o + K]
            out = torch.nn.functional.conv1d(seg[:, None], self.kernel, stride=self.o)  # [C, m, q1-q0]
            pieces.append(out.transpose(1, 2).reshape(self.channels, -1))  # [C, (q1-q0)*m]
        keep_from = max(q1, 0) * self.o - self.width  # input index the next frame starts reading at
        drop = keep_from - state.buffer_start
        new_state = ResamplerState(buffer[:, drop:].clone(), keep_from, state.frames_out + count)
        return torch.cat(pieces, dim=1).T.contiguous(), new_state  # [S_out, C]
