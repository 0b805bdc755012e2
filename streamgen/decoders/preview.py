"""A fast streaming latent-to-RGB decoder with explicit state.

Used for presets without a trained decoder (``tiny``) and as the fast path for Wan latents when the
full VAE is not wanted: a causal temporal mix of the current and previous latent frame, a per-pixel
linear map to ``temporal_upsample`` RGB frames, and nearest spatial upsampling. Its weights are a
fixed function of the seed (or loaded), so a stream decodes the same chunk by chunk as whole.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass(kw_only=True)
class PreviewDecoderConfig:
    latent_channels: int = 16  # Wan VAE latent channels
    temporal_upsample: int = 4  # pixel frames per latent frame (Wan VAE: 4)
    spatial_upsample: int = 8  # pixels per latent pixel (Wan VAE: 8)
    seed: int = 0  # weights are drawn from this seed when not loaded


@dataclass
class PreviewDecoderState:
    """The previous latent frame ``[B, C, h, w]`` (None before the first chunk)."""

    prev: torch.Tensor | None = None


class PreviewDecoder(nn.Module):
    def __init__(self, config: PreviewDecoderConfig) -> None:
        super().__init__()
        self.config = config
        c, tu = config.latent_channels, config.temporal_upsample
        g = torch.Generator().manual_seed(config.seed)
        self.mix_now = nn.Parameter(torch.eye(c) + 0.1 * torch.randn(c, c, generator=g))
        self.mix_prev = nn.Parameter(0.2 * torch.randn(c, c, generator=g))
        self.to_rgb = nn.Parameter(torch.randn(tu * 3, c, generator=g) / c**0.5)
        self.bias = nn.Parameter(torch.zeros(tu * 3))

    def init_state(self) -> PreviewDecoderState:
        return PreviewDecoderState()

    def decode(self, latents: torch.Tensor, state: PreviewDecoderState) -> tuple[torch.Tensor, PreviewDecoderState]:
        """latents ``[B, F, C, h, w]`` -> frames ``[B, F * tu, 3, H, W]`` in [0, 1], and the new state."""
        b, f, c, h, w = latents.shape
        cfg = self.config
        prev0 = state.prev if state.prev is not None else torch.zeros_like(latents[:, 0])
        prev = torch.cat([prev0[:, None], latents[:, :-1]], dim=1)  # [B, F, C, h, w]
        mixed = torch.einsum("oc,bfchw->bfohw", self.mix_now, latents) + torch.einsum("oc,bfchw->bfohw", self.mix_prev, prev)
        rgb = torch.einsum("oc,bfchw->bfohw", self.to_rgb, mixed) + self.bias[None, None, :, None, None]  # [B, F, tu*3, h, w]
        rgb = rgb.reshape(b, f * cfg.temporal_upsample, 3, h, w)  # [B, F*tu, 3, h, w]
        su = cfg.spatial_upsample
        rgb = rgb.repeat_interleave(su, dim=-2).repeat_interleave(su, dim=-1)  # [B, F*tu, 3, H, W]
        frames = torch.sigmoid(rgb)
        return frames, PreviewDecoderState(prev=latents[:, -1].detach().clone())


def frames_to_uint8(frames: torch.Tensor) -> "numpy.ndarray":  # noqa: F821
    """``[F, 3, H, W]`` floats in [0, 1] -> numpy uint8 ``[F, H, W, 3]``."""
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()  # [F, H, W, 3]
