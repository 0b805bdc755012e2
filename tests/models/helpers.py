"""Shared builders for the model invariant tests (tiny preset, fp32, reference attention)."""
from __future__ import annotations

import torch

from streamgen.presets import preset
from streamgen.models.dit import CausalDiT


def randomised_model(seed: int = 0, **overrides) -> CausalDiT:
    """A tiny CausalDiT whose every parameter (zero-init head and norms included) is random, so no
    invariant holds trivially."""
    return randomised("tiny", seed, **overrides)


def randomised(name: str, seed: int = 0, **overrides) -> CausalDiT:
    """A model of the preset ``name`` with every parameter random (zero-init heads and action outputs included)."""
    config = preset(name).with_(**overrides)
    torch.manual_seed(seed)
    model = CausalDiT(config)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.15)
    model.attention_backend = "reference"
    return model.eval()


def latents(model: CausalDiT, frames: int, seed: int = 1) -> torch.Tensor:
    c = model.config
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, frames, c.in_channels, c.latent_height, c.latent_width, generator=g)


def text_kv(model: CausalDiT, seed: int = 2):
    c = model.config
    g = torch.Generator().manual_seed(seed)
    return model.encode_text(torch.randn(1, c.text_len, c.text_dim, generator=g))
