"""Small causal audio autoencoder for the console's sound, with a streaming decoder.

Waveform [B, N] in [-1, 1] at the console rate (30720 Hz for ALE) <-> latents [B, N / hop, C].
The waveform is cut into patches of ``patch`` samples (as channels); each further stage folds
``factor`` consecutive steps into channels, so hop = patch * factor ** stages. Every conv is
causal in time; the decoder carries a :class:`StreamState` between chunks (returned, passed back),
so a chunk of audio latents is decoded as soon as it is generated. Resampling to 48 kHz for the
browser happens in the serving code, not here.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .causal_conv import CacheCursor, CausalTimeConv1d, StreamState, load_module_file, save_module


@dataclass(kw_only=True)
class AudioAEConfig:
    """Shapes of the audio autoencoder."""

    # ALE: 512 samples per emulator frame at 60 frames/s.
    sample_rate: int = 30720
    # Samples folded into channels at the input (the first, cheapest compression).
    patch: int = 8
    # Each stage folds ``factor`` steps into channels; hop = patch * factor**len(channels[1:]).
    # 8 * 4**3 = 512 samples = one emulator frame per latent (60 latents/s, 4 per video step).
    factor: int = 4
    # Small widths: console sound is simple, and decoding must cost a few % of one CPU core.
    channels: tuple[int, ...] = (16, 32, 64, 96)
    # 16 channels per 512 samples (32x compression): console sound is a few square waves and noise.
    latent_channels: int = 16
    kernel: int = 3

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        if self.patch < 1 or self.factor < 2 or len(self.channels) < 1:
            raise ValueError(f"need patch >= 1, factor >= 2, channels, got {self.patch}, {self.factor}, {self.channels}")

    @property
    def hop(self) -> int:
        return self.patch * self.factor ** (len(self.channels) - 1)


class _Res1d(nn.Module):
    def __init__(self, c: int, k: int) -> None:
        super().__init__()
        self.a = CausalTimeConv1d(c, c, k)
        self.b = CausalTimeConv1d(c, c, 1)

    def forward(self, x: torch.Tensor, cursor: CacheCursor) -> torch.Tensor:
        return x + self.b(F.silu(self.a(F.silu(x), cursor)), cursor)


def _fold(x: torch.Tensor, r: int) -> torch.Tensor:
    """[B, C, T*r] -> [B, C*r, T] (r consecutive steps become channels)."""
    b, c, t = x.shape
    return x.reshape(b, c, t // r, r).permute(0, 1, 3, 2).reshape(b, c * r, t // r)  # [B,C,T,r]->[B,C,r,T]->[B,C*r,T]


def _unfold(x: torch.Tensor, r: int) -> torch.Tensor:
    """[B, C*r, T] -> [B, C, T*r] (inverse of :func:`_fold`)."""
    b, cr, t = x.shape
    return x.reshape(b, cr // r, r, t).permute(0, 1, 3, 2).reshape(b, cr // r, t * r)  # [B,C,r,T]->[B,C,T,r]->[B,C,T*r]


class AudioEncoder(nn.Module):
    """[B, N] waveform -> [B, N / hop, C] latents; N must be a multiple of hop."""

    def __init__(self, cfg: AudioAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch = cfg.channels
        self.stem = CausalTimeConv1d(cfg.patch, ch[0], cfg.kernel)
        self.blocks = nn.ModuleList(_Res1d(c, cfg.kernel) for c in ch)
        self.downs = nn.ModuleList(CausalTimeConv1d(ch[i] * cfg.factor, ch[i + 1], 1) for i in range(len(ch) - 1))
        self.out = CausalTimeConv1d(ch[-1], cfg.latent_channels, cfg.kernel)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        if wav.ndim != 2 or wav.shape[1] % cfg.hop:
            raise ValueError(f"waveform must be [B, N] with N % {cfg.hop} == 0, got {tuple(wav.shape)}")
        cursor = CacheCursor(None)
        h = self.stem(_fold(wav.unsqueeze(1), cfg.patch), cursor)  # [B, N] -> [B, patch, N/patch] -> [B, C0, T0]
        for i, block in enumerate(self.blocks):
            h = block(h, cursor)
            if i < len(self.downs):
                h = self.downs[i](_fold(h, cfg.factor), cursor)
        z = self.out(F.silu(h), cursor)  # [B, C, Fa]
        return z.transpose(1, 2)  # [B, C, Fa] -> [B, Fa, C]


class AudioDecoder(nn.Module):
    """Latents [B, Fa, C] -> waveform [B, Fa * hop] (about [-1, 1]), streamable."""

    def __init__(self, cfg: AudioAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch = cfg.channels[::-1]
        self.inp = CausalTimeConv1d(cfg.latent_channels, ch[0], cfg.kernel)
        self.blocks = nn.ModuleList(_Res1d(c, cfg.kernel) for c in ch)
        self.ups = nn.ModuleList(CausalTimeConv1d(ch[i], ch[i + 1] * cfg.factor, 1) for i in range(len(ch) - 1))
        self.out = CausalTimeConv1d(ch[-1], cfg.patch, cfg.kernel)

    def forward(self, z: torch.Tensor, state: StreamState | None = None) -> tuple[torch.Tensor, StreamState]:
        """Decode a chunk of audio latents; returns the waveform and the state for the next chunk."""
        cfg = self.cfg
        if z.ndim != 3 or z.shape[2] != cfg.latent_channels:
            raise ValueError(f"audio latents must be [B, Fa, {cfg.latent_channels}], got {tuple(z.shape)}")
        state = state if state is not None else StreamState()
        cursor = CacheCursor(state.tails)
        h = self.inp(z.transpose(1, 2), cursor)  # [B, Fa, C] -> [B, C, Fa] -> [B, C0, Fa]
        for i, block in enumerate(self.blocks):
            h = block(h, cursor)
            if i < len(self.ups):
                h = _unfold(self.ups[i](F.silu(h), cursor), cfg.factor)  # [B, C*f, T] -> [B, C, T*f]
        wav = _unfold(self.out(F.silu(h), cursor), cfg.patch)  # [B, patch, T] -> [B, 1, T*patch]
        return wav.squeeze(1), StreamState(tails=cursor.finish(), steps=state.steps + z.shape[1])


class AudioAutoencoder(nn.Module):
    """Encoder + decoder + the latent statistics the world model normalises with."""

    def __init__(self, cfg: AudioAEConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or AudioAEConfig()
        self.encoder = AudioEncoder(self.cfg)
        self.decoder = AudioDecoder(self.cfg)
        self.register_buffer("latent_mean", torch.zeros(self.cfg.latent_channels))
        self.register_buffer("latent_std", torch.ones(self.cfg.latent_channels))

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        return self.encoder(wav)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decode a whole latent sequence from a fresh stream."""
        return self.decoder(z)[0]

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.latent_mean) / self.latent_std

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.latent_std + self.latent_mean

    def config_dict(self) -> dict:
        return asdict(self.cfg)

    def save(self, path: str | os.PathLike) -> None:
        """Weights (with latent statistics) and config in one safetensors file, written atomically."""
        save_module(self, path, {"config": json.dumps(self.config_dict()), "kind": type(self).__name__})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "AudioAutoencoder":
        """Build from a file written by :meth:`save`."""
        tensors, meta = load_module_file(path, type_name=cls.__name__)
        model = cls(AudioAEConfig(**json.loads(meta["config"])))
        model.load_state_dict(tensors)
        return model


def console_to_unit(samples: torch.Tensor) -> torch.Tensor:
    """ALE uint8 samples (silence 128) -> float waveform in [-1, 1)."""
    return (samples.float() - 128.0) / 128.0


def unit_to_console(wav: torch.Tensor) -> torch.Tensor:
    """Float waveform -> uint8 console samples."""
    return (wav.clamp(-1, 127 / 128) * 128.0 + 128.0).round().to(torch.uint8)
