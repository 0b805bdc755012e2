"""A small avatar model folder for server tests: the avatar preset's layout (speech in, a reference sink, a
video autoencoder that can encode the reference) at 32x32 with one narrow layer and random weights, written
as real safetensors files and served by path like a shipped model, with three of the shipped identities (64x64)
for the reference picker."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from streamgen.checkpoints.io import save_checkpoint
from streamgen.presets import preset
from streamgen.decoders.video_autoencoder import VideoAEConfig, VideoAutoencoder
from streamgen.models.dit import CausalDiT
from streamgen.pipeline import WEIGHTS_DIR
from streamgen.server.avatar_identities import IDENTITIES_FILE

NAME = "avtest"
RATE = 16000  # the avatar preset's speech-in rate
IDENTITIES = 3  # of the shipped avatar's 12, written beside the test model for the picker


def speech_like(seconds: float, seed: int = 0, step_s: float = 0.1) -> np.ndarray:
    """Tone bursts of varying loudness (a new one every ``step_s``) and pitch: a signal whose every stretch differs."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    env = np.repeat(rng.uniform(0.0, 0.6, int(seconds / step_s) + 1), int(RATE * step_s))[: t.size]
    return (env * np.sin(2 * np.pi * (180 + 40 * np.sin(3 * t)) * t)).astype(np.float32)


def write_avatar_folder(root: Path) -> Path:
    """``root/avtest`` with model.safetensors, config.json and video_ae.safetensors; served as ``avtest``."""
    cfg = preset("avatar").with_(name=NAME, dim=32, ffn_dim=64, num_heads=2, num_layers=1, latent_height=8,
                                 latent_width=8)
    torch.manual_seed(0)
    model = CausalDiT(cfg)
    model.wake_outputs(actions=True)  # random weights whose output depends on the speech and the reference
    folder = save_checkpoint(root / NAME, cfg, model)
    VideoAutoencoder(VideoAEConfig(height=32, width=32, channels=(8, 16, 16))).save(folder / "video_ae.safetensors")
    np.savez(folder / IDENTITIES_FILE, images=shipped_identities()[:IDENTITIES])  # the picker's faces
    return folder


def shipped_identities() -> np.ndarray:
    """The shipped avatar's identities, uint8 [12, 64, 64, 3] (``streamgen/weights/avatar/references.npz``)."""
    with np.load(WEIGHTS_DIR / "avatar" / IDENTITIES_FILE) as data:
        return data["images"]
