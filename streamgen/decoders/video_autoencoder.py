"""Small causal video autoencoder for the Atari world model, with a streaming decoder.

Pixels [B, T, 3, H, W] in [-1, 1] <-> latents [B, T / temporal, C, H / spatial, W / spatial].
Latent frame f covers pixel frames [f * temporal, (f + 1) * temporal); every temporal layer is
causal, so the decoder turns each new latent block into pixels as soon as it is generated, carrying
a :class:`StreamState` (returned, and passed back by the caller) between blocks. Spatial layers act
per frame; time is mixed by per-pixel causal convs ((2+1)-D), which keeps decoding cheap on a CPU.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .causal_conv import (
    load_module_file,
    save_module,
    CacheCursor,
    CausalFrameMix,
    FrameConv2d,
    StreamState,
    pixel_shuffle_frames,
    pixel_unshuffle_frames,
)


@dataclass(kw_only=True)
class VideoAEConfig:
    """Shapes of the video autoencoder."""

    # 64x64 frames: the Atari dataset's size (ball still visible after the resize, docs/data.md).
    height: int = 64
    width: int = 64
    # 4 latent channels: Atari frames are a few flat colours; 4 x 16 x 16 per 2 frames (48x
    # compression) reconstructs them, and keeps the world model's tokens small.
    latent_channels: int = 4
    # Spatial factor 4 (two x2 stages): 64x64 -> 16x16, i.e. 64 tokens with the DiT's 2x2 patch.
    spatial: int = 4
    # Temporal factor 2: 15 frames/s (frame skip 4) -> 7.5 latent frames/s, halving the world
    # model's work while a latent still spans only 133 ms of play.
    temporal: int = 2
    # Widths from full resolution to the latent resolution. (16, 32, 64) with no residual block at
    # full resolution decodes >100 frames/s on one CPU thread; (32, 48, 64) with one ran at ~50.
    channels: tuple[int, ...] = (16, 32, 64)
    # A residual block at full resolution in the decoder (most of the cost; off for speed).
    full_res_block: bool = False
    # Taps of the causal temporal mixers (in frames of their rate).
    time_kernel: int = 3

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        stages = len(self.channels) - 1
        if self.spatial != 2**stages:
            raise ValueError(f"spatial={self.spatial} must equal 2**(len(channels)-1) = {2**stages}")
        if self.height % self.spatial or self.width % self.spatial:
            raise ValueError(f"frame {self.height}x{self.width} not divisible by spatial={self.spatial}")
        if self.temporal < 1 or self.latent_channels < 1:
            raise ValueError(f"temporal={self.temporal} and latent_channels={self.latent_channels} must be >= 1")

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (self.latent_channels, self.height // self.spatial, self.width // self.spatial)


class _Res2d(nn.Module):
    """Per-frame residual block."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.a = FrameConv2d(c, c, 3)
        self.b = FrameConv2d(c, c, 3)

    def forward(self, x: torch.Tensor, cursor: CacheCursor) -> torch.Tensor:
        return x + self.b(F.silu(self.a(F.silu(x))))


class _Res3d(nn.Module):
    """Residual block: a per-frame 3x3 conv, then causal mixing over frames."""

    def __init__(self, c: int, k: int) -> None:
        super().__init__()
        self.a = FrameConv2d(c, c, 3)
        self.t = CausalFrameMix(c, c, k)

    def forward(self, x: torch.Tensor, cursor: CacheCursor) -> torch.Tensor:
        return x + self.t(F.silu(self.a(F.silu(x))), cursor)


class _Skip(nn.Module):
    def forward(self, x: torch.Tensor, cursor: CacheCursor) -> torch.Tensor:
        return x


class VideoEncoder(nn.Module):
    """[B, T, 3, H, W] in [-1, 1] -> [B, T / temporal, C, h, w]; T must be a multiple of temporal."""

    def __init__(self, cfg: VideoAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch = cfg.channels
        self.stem = FrameConv2d(3, ch[0], 3)
        self.blocks = nn.ModuleList()
        self.downs = nn.ModuleList()
        for i in range(len(ch) - 1):
            self.blocks.append(_Res2d(ch[i]))
            self.downs.append(FrameConv2d(ch[i] * 4, ch[i + 1], 3))
        self.mid = _Res3d(ch[-1], cfg.time_kernel)
        self.merge = FrameConv2d(ch[-1] * cfg.temporal, ch[-1], 1)
        self.post = _Res3d(ch[-1], cfg.time_kernel)
        self.out = FrameConv2d(ch[-1], cfg.latent_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        if x.ndim != 5 or x.shape[2] != 3 or x.shape[1] % cfg.temporal:
            raise ValueError(f"frames must be [B, T, 3, H, W] with T % {cfg.temporal} == 0, got {tuple(x.shape)}")
        cursor = CacheCursor(None)
        h = self.stem(x)
        for block, down in zip(self.blocks, self.downs):
            h = down(pixel_unshuffle_frames(block(h, cursor), 2))
        h = self.mid(h, cursor)
        b, t, c, hh, ww = h.shape
        h = h.reshape(b, t // cfg.temporal, cfg.temporal * c, hh, ww)  # [B, T, C, h, w] -> [B, F, t*C, h, w]
        h = self.post(self.merge(h), cursor)
        return self.out(F.silu(h))


class VideoDecoder(nn.Module):
    """Latents [B, F, C, h, w] -> pixels [B, F * temporal, 3, H, W] (about [-1, 1]), streamable."""

    def __init__(self, cfg: VideoAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch = cfg.channels[::-1]
        self.inp = FrameConv2d(cfg.latent_channels, ch[0], 3)
        self.pre = _Res3d(ch[0], cfg.time_kernel)
        self.split = FrameConv2d(ch[0], ch[0] * cfg.temporal, 1)
        self.mid = _Res3d(ch[0], cfg.time_kernel)
        self.ups = nn.ModuleList()
        self.blocks = nn.ModuleList()
        for i in range(len(ch) - 1):
            self.ups.append(FrameConv2d(ch[i], ch[i + 1] * 4, 3))
            last = i == len(ch) - 2
            self.blocks.append(_Res2d(ch[i + 1]) if (cfg.full_res_block or not last) else _Skip())
        self.out = FrameConv2d(ch[-1], 3, 3)

    def forward(self, z: torch.Tensor, state: StreamState | None = None) -> tuple[torch.Tensor, StreamState]:
        """Decode a chunk of latent frames; returns the pixels and the state for the next chunk."""
        cfg = self.cfg
        if z.ndim != 5 or z.shape[2] != cfg.latent_channels:
            # Any h, w works (the layers are convolutional; training uses crops); streaming needs the
            # same h, w in every chunk of one stream.
            raise ValueError(f"latents must be [B, F, {cfg.latent_channels}, h, w], got {tuple(z.shape)}")
        state = state if state is not None else StreamState()
        cursor = CacheCursor(state.tails)
        h = self.pre(self.inp(z), cursor)
        b, f, c, hh, ww = h.shape
        h = self.split(F.silu(h))  # [B, F, t*C, h, w]
        h = h.reshape(b, f * cfg.temporal, c, hh, ww)  # [B, F, t*C, h, w] -> [B, F*t, C, h, w]
        h = self.mid(h, cursor)
        for up, block in zip(self.ups, self.blocks):
            h = block(pixel_shuffle_frames(up(F.silu(h)), 2), cursor)
        x = self.out(F.silu(h))
        return x, StreamState(tails=cursor.finish(), steps=state.steps + f)


class VideoAutoencoder(nn.Module):
    """Encoder + decoder + the latent statistics the world model normalises with."""

    def __init__(self, cfg: VideoAEConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or VideoAEConfig()
        self.encoder = VideoEncoder(self.cfg)
        self.decoder = VideoDecoder(self.cfg)
        # Per-channel mean / std of training latents (set after training; identity until then).
        self.register_buffer("latent_mean", torch.zeros(self.cfg.latent_channels))
        self.register_buffer("latent_std", torch.ones(self.cfg.latent_channels))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decode a whole latent sequence from a fresh stream."""
        return self.decoder(z)[0]

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.latent_mean.view(-1, 1, 1)) / self.latent_std.view(-1, 1, 1)  # [C] -> [C, 1, 1]

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.latent_std.view(-1, 1, 1) + self.latent_mean.view(-1, 1, 1)  # [C] -> [C, 1, 1]

    def config_dict(self) -> dict:
        return asdict(self.cfg)

    def save(self, path: str | os.PathLike) -> None:
        """Weights (with latent statistics) and config in one safetensors file, written atomically."""
        save_module(self, path, {"config": json.dumps(self.config_dict()), "kind": type(self).__name__})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "VideoAutoencoder":
        """Build from a file written by :meth:`save`."""
        tensors, meta = load_module_file(path, type_name=cls.__name__)
        model = cls(VideoAEConfig(**json.loads(meta["config"])))
        model.load_state_dict(tensors)
        return model


def frames_to_unit(frames: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float in [-1, 1]."""
    return frames.float() / 127.5 - 1.0


def unit_to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Decoder output (about [-1, 1]) -> uint8 pixels."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
