"""Builders for the joint audio-video and action tests (tiny-av / tiny-world, fp32, reference attention)."""
from __future__ import annotations

import torch

from streamgen.config import preset
from streamgen.models.av_masks import joint_mask_for
from streamgen.models.dit import CausalDiT


def randomised(name: str = "tiny-av", seed: int = 0, **overrides) -> CausalDiT:
    """A model of the preset whose every parameter (zero-init heads and action outputs included) is random."""
    config = preset(name).with_(**overrides)
    torch.manual_seed(seed)
    model = CausalDiT(config)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.15)
    model.attention_backend = "reference"
    return model.eval()


def video(model: CausalDiT, frames: int, seed: int = 1) -> torch.Tensor:
    c = model.config
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, frames, c.in_channels, c.latent_height, c.latent_width, generator=g)


def audio(model: CausalDiT, frames: int, seed: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, frames, model.config.audio.channels, generator=g)


def text_kv(model: CausalDiT, seed: int = 2):
    c = model.config
    g = torch.Generator().manual_seed(seed)
    return model.encode_text(torch.randn(1, c.text_len, c.text_dim, generator=g))


def joint_mask(model: CausalDiT, video_frames: int, *, windowed: bool = False, teacher_forcing: bool = False) -> torch.Tensor:
    return joint_mask_for(model.config, video_frames, windowed=windowed, teacher_forcing=teacher_forcing)
