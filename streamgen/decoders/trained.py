"""Trained autoencoders shipped in a weights folder, behind the pipeline's decoder interface.

A folder with ``video_ae.safetensors`` (and, for a model with sound, ``audio_ae.safetensors``) beside
its ``model.safetensors`` is decoded by them; each file records its own architecture, so a new world
brings its autoencoders in its folder. A world model generates *normalised* latents (the autoencoders'
stored per-channel statistics); these adapters denormalise, decode with the streaming causal decoders
(explicit state, returned and passed back), and also encode real frames / sound for ``Session.prime``:

- :class:`TrainedVideoDecoder`: ``decode(latents [B, F, C, h, w], state) -> (frames [B, F * tu, 3, H, W]
  in [0, 1], state)``; ``encode(frames uint8 [T, H, W, 3]) -> latents [1, T / tu, C, h, w]``.
- :class:`TrainedAudioDecoder`: ``decode(latents [B, Fa, Ca], state) -> (wave [B, Fa * hop, 1] float32,
  state)`` at the native rate; ``encode(wave float32 [S, 1]) -> latents [1, S / hop, Ca]``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from .audio_autoencoder import AudioAutoencoder
from .causal_conv import StreamState
from .video_autoencoder import VideoAutoencoder, frames_to_unit

VIDEO_FILE = "video_ae.safetensors"
AUDIO_FILE = "audio_ae.safetensors"


class TrainedVideoDecoder(nn.Module):
    can_encode = True

    def __init__(self, ae: VideoAutoencoder) -> None:
        super().__init__()
        self.ae = ae.eval()

    @classmethod
    def load(cls, path: str | Path) -> "TrainedVideoDecoder":
        return cls(VideoAutoencoder.load(path))

    def init_state(self) -> StreamState:
        return StreamState()

    def decode(self, latents: torch.Tensor, state: StreamState) -> tuple[torch.Tensor, StreamState]:
        z = self.ae.denormalize(latents.to(self.ae.latent_mean.dtype))
        x, state = self.ae.decoder(z, state)  # [B, F*tu, 3, H, W] in about [-1, 1]
        return ((x.float() + 1) * 0.5).clamp(0, 1), state

    @torch.no_grad()
    def encode(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 ``[T, H, W, 3]`` -> normalised latents ``[1, T / tu, C, h, w]``."""
        x = torch.as_tensor(np.asarray(frames))
        cfg = self.ae.cfg
        if x.dtype != torch.uint8 or x.ndim != 4 or tuple(x.shape[1:]) != (cfg.height, cfg.width, 3) or x.shape[0] % cfg.temporal:
            raise ValueError(f"frames must be uint8 [T, {cfg.height}, {cfg.width}, 3] with T % {cfg.temporal} == 0, "
                             f"got {x.dtype} {tuple(x.shape)}")
        unit = frames_to_unit(x.permute(0, 3, 1, 2))[None]  # [T, H, W, 3] -> [1, T, 3, H, W]
        return self.ae.normalize(self.ae.encode(unit.to(self.ae.latent_mean.device)))


class TrainedAudioDecoder(nn.Module):
    can_encode = True

    def __init__(self, ae: AudioAutoencoder) -> None:
        super().__init__()
        self.ae = ae.eval()

    @classmethod
    def load(cls, path: str | Path) -> "TrainedAudioDecoder":
        return cls(AudioAutoencoder.load(path))

    @property
    def hop(self) -> int:
        return self.ae.cfg.hop

    def init_state(self) -> StreamState:
        return StreamState()

    def samples_for(self, latent_frames: int) -> int:
        return latent_frames * self.hop

    def decode(self, latents: torch.Tensor, state: StreamState) -> tuple[torch.Tensor, StreamState]:
        z = self.ae.denormalize(latents.to(self.ae.latent_mean.dtype))
        wave, state = self.ae.decoder(z, state)  # [B, Fa*hop]
        return wave.float().clamp(-1, 1)[..., None], state  # [B, Fa*hop] -> [B, Fa*hop, 1]

    @torch.no_grad()
    def encode(self, wave: np.ndarray | torch.Tensor) -> torch.Tensor:
        """float32 ``[S, 1]`` in [-1, 1] at the native rate -> normalised latents ``[1, S / hop, Ca]``."""
        w = torch.as_tensor(np.asarray(wave, dtype=np.float32))
        if w.ndim != 2 or w.shape[1] != 1 or w.shape[0] % self.hop:
            raise ValueError(f"audio must be float32 [S, 1] with S % {self.hop} == 0, got {tuple(w.shape)}")
        return self.ae.normalize(self.ae.encode(w[:, 0][None].to(self.ae.latent_mean.device)))  # [1, S/hop, Ca]


def load_trained_decoders(folder: str | Path) -> tuple[TrainedVideoDecoder, TrainedAudioDecoder | None] | None:
    """The trained decoders of a weights folder (None when it has no ``video_ae.safetensors``)."""
    folder = Path(folder)
    if not (folder / VIDEO_FILE).is_file():
        return None
    audio = TrainedAudioDecoder.load(folder / AUDIO_FILE) if (folder / AUDIO_FILE).is_file() else None
    return TrainedVideoDecoder.load(folder / VIDEO_FILE), audio
