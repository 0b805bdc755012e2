"""A tiny streaming decoder (and encoder) for Wan2.1 latents, in the layout of the public ``taew2_1.pth``.

``taew2_1.pth`` (madebyollin/taehv, "TAEHV" for Wan 2.1) is a small autoencoder distilled to Wan2.1's
latent space: per-frame 2-D convs plus "memory" blocks that see the same layer's previous frame, so
it is causal in time and decodes a 832x480 frame in a fraction of the full VAE's time. Its state dict
holds two ``nn.Sequential`` lists, ``encoder.N`` and ``decoder.N``; this module builds the same lists
(its own code) so the file loads key for key.

Decoder: latents -> (clamp) -> 256 ch -> 3 memory blocks -> x2 space -> 128 ch -> 3 memory blocks ->
x2 space, x2 time -> 64 ch -> 3 memory blocks -> x2 space, x2 time -> RGB. Each latent frame becomes 4
pixel frames; the first 3 frames of a stream are dropped (the file is aligned to the Wan VAE, whose
first latent frame is a single pixel frame). The streaming state is each memory block's last input
frame, so decoding block by block equals decoding the whole sequence at once.

Latents in and out are Wan-normalised (as the transformer makes them); the file works on the VAE's own
latents, so ``decode`` denormalises with Wan2.1's statistics first and ``encode`` normalises after.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .wan_vae import wan21_latent_stats

LATENT_CHANNELS = 16  # Wan2.1's latent channels
TIME_UPSAMPLE = 4  # pixel frames per latent frame (two x2 time stages)
TRIM = TIME_UPSAMPLE - 1  # frames dropped at the start of a stream (alignment with the Wan VAE)


def _conv(c_in: int, c_out: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=bias)


class _Clamp(nn.Module):
    """A soft clamp of the latents to about [-3, 3]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class MemBlock(nn.Module):
    """A residual block that also sees its own input one frame earlier (``past``)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(_conv(2 * c, c), nn.ReLU(), _conv(c, c), nn.ReLU(), _conv(c, c))

    def forward(self, x: torch.Tensor, past: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(torch.cat([x, past], dim=1)) + x)


class TimeGrow(nn.Module):
    """One frame -> ``stride`` frames by a 1x1 conv to ``stride`` channel groups (frames stay batch-major)."""

    def __init__(self, c: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(c, c * stride, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nt, c, h, w = x.shape
        return self.conv(x).reshape(nt * self.stride, c, h, w)  # [N*T, s*C, H, W] -> [N*T*s, C, H, W]


class TimePool(nn.Module):
    """``stride`` frames -> one frame by a 1x1 conv over their stacked channels."""

    def __init__(self, c: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(c * stride, c, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nt, c, h, w = x.shape
        return self.conv(x.reshape(nt // self.stride, self.stride * c, h, w))  # [N*T, C, H, W] -> [N*T/s, s*C, H, W]


def _build_decoder() -> nn.Sequential:
    widths = (256, 128, 64, 64)
    layers: list[nn.Module] = [_Clamp(), _conv(LATENT_CHANNELS, widths[0]), nn.ReLU()]
    for stage, time_stride in enumerate((1, 2, 2)):  # the first stage grows space only
        c = widths[stage]
        layers += [MemBlock(c), MemBlock(c), MemBlock(c), nn.Upsample(scale_factor=2), TimeGrow(c, time_stride),
                   _conv(c, widths[stage + 1], bias=False)]
    return nn.Sequential(*layers, nn.ReLU(), _conv(widths[-1], 3))


def _build_encoder() -> nn.Sequential:
    layers: list[nn.Module] = [_conv(3, 64), nn.ReLU()]
    for time_stride in (2, 2, 1):  # the last stage pools space only
        layers += [TimePool(64, time_stride), _conv(64, 64, stride=2, bias=False), MemBlock(64), MemBlock(64), MemBlock(64)]
    return nn.Sequential(*layers, _conv(64, LATENT_CHANNELS))


def _run(layers: nn.Sequential, x: torch.Tensor, batch: int, past: list | None) -> torch.Tensor:
    """Apply ``layers`` to frames ``[B*T, C, H, W]`` (batch-major), all frames at once.

    Each memory block gets its input shifted one frame later (its ``past``), starting from ``past[i]``
    (that block's last input frame ``[B, C, H, W]`` of the previous chunk, or zeros); ``past`` is
    updated in place with this chunk's last input frames. ``past=None``: a fresh stream, not kept."""
    for i, layer in enumerate(layers):
        if isinstance(layer, MemBlock):
            bt, c, h, w = x.shape
            frames = x.reshape(batch, bt // batch, c, h, w)  # [B*T, C, H, W] -> [B, T, C, H, W]
            prev = past[i] if past is not None and past[i] is not None else torch.zeros_like(frames[:, 0])
            shifted = torch.cat([prev[:, None], frames[:, :-1]], dim=1)  # [B, T, C, H, W]: frame t sees t - 1
            if past is not None:
                past[i] = frames[:, -1]
            x = layer(x, shifted.reshape(bt, c, h, w))  # [B, T, C, H, W] -> [B*T, C, H, W]
        else:
            x = layer(x)
    return x


@dataclass
class TinyWanState:
    """Per decoder layer: the memory block's last input frame ``[B, C, H, W]`` (None elsewhere / at start),
    and the latent frames decoded so far (the stream's first block drops its first 3 pixel frames)."""

    past: list = field(default_factory=list)
    frames: int = 0


class TinyWanDecoder(nn.Module):
    can_encode = True
    temporal_upsample = TIME_UPSAMPLE
    spatial_upsample = 8

    def __init__(self) -> None:
        super().__init__()
        self.encoder = _build_encoder()
        self.decoder = _build_decoder()
        mean, std = wan21_latent_stats()
        self.register_buffer("latents_mean", mean, persistent=False)  # [C]
        self.register_buffer("latents_std", std, persistent=False)  # [C]

    def init_state(self) -> TinyWanState:
        return TinyWanState(past=[None] * len(self.decoder))

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, state: TinyWanState) -> tuple[torch.Tensor, TinyWanState]:
        """Normalised latents ``[B, F, 16, h, w]`` -> frames ``[B, 4F (4F - 3 in the first block), 3, 8h, 8w]`` in [0, 1]."""
        if latents.ndim != 5 or latents.shape[2] != LATENT_CHANNELS:
            raise ValueError(f"latents must be [B, F, {LATENT_CHANNELS}, h, w], got {tuple(latents.shape)}")
        if len(state.past) != len(self.decoder):
            raise ValueError(f"decoder state has {len(state.past)} entries, the tiny decoder needs {len(self.decoder)}; "
                             "start streams from init_state()")
        b, f, c, h, w = latents.shape
        z = latents.float() * self.latents_std.view(-1, 1, 1) + self.latents_mean.view(-1, 1, 1)  # [C] -> [C, 1, 1]
        dtype = self.decoder[1].weight.dtype
        past = list(state.past)  # entries are replaced, never mutated: the caller's state stays valid
        x = _run(self.decoder, z.to(dtype).reshape(b * f, c, h, w), b, past)  # [B, F, C, h, w] -> [B*F, C, h, w]
        x = x.reshape(b, -1, *x.shape[1:]).float().clamp(0, 1)  # [B*T, 3, H, W] -> [B, T, 3, H, W]
        if state.frames == 0:
            x = x[:, TRIM:]
        return x, TinyWanState(past=past, frames=state.frames + f)

    def decode_whole(self, latents: torch.Tensor) -> torch.Tensor:
        """Decode a whole latent sequence from a fresh stream (the reference the streaming decode equals)."""
        return self.decode(latents, self.init_state())[0]

    @torch.no_grad()
    def encode(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 ``[T, H, W, 3]`` (T = 1 + 4k, H and W multiples of 8) -> normalised latents ``[1, 1 + k, 16, H/8, W/8]``.

        The frames are padded at the end with copies of the last to a multiple of 4, as the file's
        own encoder expects."""
        x = torch.as_tensor(np.asarray(frames))
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3 or (x.shape[0] - 1) % 4 or x.shape[1] % 8 or x.shape[2] % 8:
            raise ValueError(f"frames must be uint8 [T, H, W, 3] with T = 1 + 4k and H, W multiples of 8, "
                             f"got {x.dtype} {tuple(x.shape)}")
        weight = self.encoder[0].weight
        unit = x.to(weight.device).permute(0, 3, 1, 2).to(weight.dtype) / 255  # [T, H, W, 3] -> [T, 3, H, W]
        pad = -unit.shape[0] % 4
        unit = torch.cat([unit, unit[-1:].expand(pad, -1, -1, -1)])  # [T + pad, 3, H, W]
        z = _run(self.encoder, unit, 1, None)  # [F, C, h, w]
        return ((z.float() - self.latents_mean.view(-1, 1, 1)) / self.latents_std.view(-1, 1, 1))[None]  # [1, F, C, h, w]


def load_tiny_wan(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> TinyWanDecoder:
    """A :class:`TinyWanDecoder` from a local ``taew2_1.pth`` (or the same state dict as ``.safetensors``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tiny Wan decoder: weight file {path} not found (expected taew2_1.pth from "
                                "madebyollin/taehv, downloaded beforehand; nothing is downloaded at run time)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(path)
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    model = TinyWanDecoder()
    want = model.state_dict()
    for i, layer in enumerate(model.decoder):
        key = f"decoder.{i}.conv.weight"
        if isinstance(layer, TimeGrow) and key in sd and sd[key].shape[0] > want[key].shape[0]:
            # A time-growing layer stored with more frames than built: its last frames' channels.
            sd[key] = sd[key][-want[key].shape[0]:]
    missing, unexpected = sorted(set(want) - set(sd)), sorted(set(sd) - set(want))
    bad = [k for k in want if k in sd and sd[k].shape != want[k].shape]
    if missing or unexpected or bad:
        raise ValueError(f"tiny Wan decoder: {path} is not in the taew2_1 layout: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}, wrong shape {bad[:5]}")
    model.load_state_dict(sd)
    model.encoder.to(dtype=dtype)
    model.decoder.to(dtype=dtype)  # the latent statistics stay fp32
    return model.to(device).eval()
