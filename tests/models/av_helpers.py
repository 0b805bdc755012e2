"""Builders for the joint audio-video and action tests (tiny-av / tiny-world, fp32, reference attention)."""
from __future__ import annotations

import torch

from streamgen.models.av_masks import joint_mask_for
from streamgen.models.dit import CausalDiT

from .helpers import latents as video  # noqa: F401  (the video latents of a joint model)
from .helpers import randomised as _randomised
from .helpers import text_kv  # noqa: F401


def randomised(name: str = "tiny-av", seed: int = 0, **overrides) -> CausalDiT:
    """A model of the preset whose every parameter (zero-init heads and action outputs included) is random."""
    return _randomised(name, seed, **overrides)


def audio(model: CausalDiT, frames: int, seed: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, frames, model.config.audio.channels, generator=g)


def joint_mask(model: CausalDiT, video_frames: int, *, windowed: bool = False, teacher_forcing: bool = False) -> torch.Tensor:
    return joint_mask_for(model.config, video_frames, windowed=windowed, teacher_forcing=teacher_forcing)
