"""The Wan2.1 VAE as a streaming decoder (and encoder) behind the pipeline's decoder interface.

The architecture is diffusers' ``AutoencoderKLWan``, used as it is. Its decoder turns latent frames
into pixels one at a time, each causal 3-D conv keeping the last frames it saw in a per-layer list
(diffusers' ``feat_cache``; ``feat_idx`` walks the list in call order). diffusers builds that list in
``clear_cache`` and drops it after each whole-sequence ``decode``; here it lives in a
:class:`WanVAEState` that the session holds, so a stream decodes block by block exactly as the whole
sequence would decode at once. The first latent frame of a stream becomes 1 pixel frame, each later
one 4.

- ``decode(latents [B, F, 16, h, w], state) -> (frames [B, T, 3, 8h, 8w] in [0, 1], state)``, with
  ``T = 4F`` (``4F - 3`` in the stream's first block). Latents are Wan-normalised, as the transformer
  makes them: ``z = latents * latents_std + latents_mean`` before the VAE (Wan pipelines do the same).
- ``encode(frames uint8 [T, H, W, 3]) -> latents [1, 1 + (T - 1) / 4, 16, H / 8, W / 8]``
  (normalised), for starting a stream from an image (``T = 1``) or a clip (``T = 1 + 4k``).

:func:`load_wan_vae` reads a diffusers ``vae/`` folder or Wan's original ``Wan2.1_VAE.pth``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .wan_vae_keys import original_to_diffusers

VAE_WEIGHTS = "diffusion_pytorch_model.safetensors"
VAE_CONFIG = "config.json"


@dataclass
class WanVAEState:
    """A stream's decoder state: diffusers' per-conv feature cache and the latent frames decoded so far.

    ``cache`` has one entry per causal conv of the decoder, in the order the decoder visits them:
    ``None`` before the stream's first frame, then the last frames that conv saw (or diffusers'
    ``"Rep"`` marker for a temporal upsampler that has seen only the first frame). Entries are
    replaced, never changed in place, so a state that was passed in stays valid (a stream can fork)."""

    cache: list = field(default_factory=list)
    frames: int = 0


class WanVAEDecoder(nn.Module):
    """Streaming decode / whole-clip encode with a diffusers ``AutoencoderKLWan``."""

    can_encode = True
    temporal_upsample = 4  # pixel frames per latent frame (after the first)
    spatial_upsample = 8  # pixels per latent pixel

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae.eval()
        cfg = vae.config
        # [C] statistics of Wan's latents; registered so .to() moves them with the weights.
        self.register_buffer("latents_mean", torch.tensor(cfg.latents_mean, dtype=torch.float32), persistent=False)
        self.register_buffer("latents_std", torch.tensor(cfg.latents_std, dtype=torch.float32), persistent=False)
        self.latent_channels = int(cfg.z_dim)
        # Number of causal convs in the decoder (the length of diffusers' feat_cache).
        from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

        self.cache_len = sum(isinstance(m, WanCausalConv3d) for m in vae.decoder.modules())

    def init_state(self) -> WanVAEState:
        return WanVAEState(cache=[None] * self.cache_len)

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents ``[B, F, C, h, w]`` -> the VAE's own latents, same shape."""
        return latents * self.latents_std.view(-1, 1, 1) + self.latents_mean.view(-1, 1, 1)  # [C] -> [C, 1, 1]

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.latents_mean.view(-1, 1, 1)) / self.latents_std.view(-1, 1, 1)  # [C] -> [C, 1, 1]

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, state: WanVAEState) -> tuple[torch.Tensor, WanVAEState]:
        if latents.ndim != 5 or latents.shape[2] != self.latent_channels:
            raise ValueError(f"latents must be [B, F, {self.latent_channels}, h, w], got {tuple(latents.shape)}")
        if len(state.cache) != self.cache_len:
            raise ValueError(f"decoder state has {len(state.cache)} cache entries, this VAE needs {self.cache_len}; "
                             "start streams from init_state()")
        dtype = self.vae.post_quant_conv.weight.dtype
        z = self.denormalize(latents.float()).to(dtype).permute(0, 2, 1, 3, 4)  # [B, F, C, h, w] -> [B, C, F, h, w]
        x = self.vae.post_quant_conv(z)  # a 1x1x1 conv: no temporal state
        cache = list(state.cache)  # entries are replaced below, never mutated: the caller's state stays valid
        outs = []
        for i in range(x.shape[2]):
            idx = [0]  # diffusers' feat_idx: the decoder walks its convs from the first each frame
            outs.append(self.vae.decoder(x[:, :, i : i + 1], feat_cache=cache, feat_idx=idx,
                                         first_chunk=state.frames + i == 0))
        out = torch.cat(outs, dim=2).clamp(-1, 1)  # [B, 3, T, H, W], as diffusers' decode clamps
        frames = ((out.float() + 1) * 0.5).permute(0, 2, 1, 3, 4)  # [B, 3, T, H, W] -> [B, T, 3, H, W]
        return frames, WanVAEState(cache=cache, frames=state.frames + x.shape[2])

    @torch.no_grad()
    def encode(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 ``[T, H, W, 3]`` (T = 1 + 4k, H and W multiples of 8) -> normalised latents
        ``[1, 1 + k, C, H / 8, W / 8]`` (the posterior mean, as Wan's pipelines take it)."""
        x = torch.as_tensor(np.asarray(frames))
        s = self.spatial_upsample
        if (x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3 or (x.shape[0] - 1) % 4
                or x.shape[1] % s or x.shape[2] % s):
            raise ValueError(f"frames must be uint8 [T, H, W, 3] with T = 1 + 4k and H, W multiples of {s}, "
                             f"got {x.dtype} {tuple(x.shape)}")
        weight = self.vae.quant_conv.weight
        unit = x.to(weight.device).permute(3, 0, 1, 2)[None].to(weight.dtype) / 127.5 - 1  # [T, H, W, 3] -> [1, 3, T, H, W]
        mu = self.vae.encode(unit).latent_dist.mode()  # [1, C, F, h, w]
        return self.normalize(mu.float().permute(0, 2, 1, 3, 4))  # [1, C, F, h, w] -> [1, F, C, h, w]


def wan21_latent_stats() -> tuple[torch.Tensor, torch.Tensor]:
    """Wan2.1's per-channel latent mean and std ``[16]`` each: the defaults of diffusers'
    ``AutoencoderKLWan`` config (the numbers Wan's own ``vae.py`` uses)."""
    import inspect

    from diffusers import AutoencoderKLWan

    params = inspect.signature(AutoencoderKLWan.__init__).parameters
    return (torch.tensor(params["latents_mean"].default, dtype=torch.float32),
            torch.tensor(params["latents_std"].default, dtype=torch.float32))


def _missing(path: Path, what: str) -> FileNotFoundError:
    return FileNotFoundError(f"Wan VAE: {what} not found at {path} (give a diffusers vae/ folder with "
                             f"{VAE_CONFIG} + {VAE_WEIGHTS}, or Wan's original Wan2.1_VAE.pth)")


def _vae_from_original(path: Path, dtype: torch.dtype) -> nn.Module:
    """An ``AutoencoderKLWan`` from Wan's original ``.pth``; widths read from the weights' shapes."""
    from diffusers import AutoencoderKLWan

    sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(sd, dict) or "encoder.conv1.weight" not in sd or "decoder.conv1.weight" not in sd:
        raise ValueError(f"Wan VAE: {path} is not a Wan2.1 VAE state dict (no encoder.conv1 / decoder.conv1 weights)")
    base_dim = int(sd["encoder.conv1.weight"].shape[0])  # conv1: [base_dim, 3, 3, 3, 3]
    z_dim = int(sd["decoder.conv1.weight"].shape[1])  # conv1: [4 * base_dim, z_dim, 3, 3, 3]
    with torch.device("meta"):
        vae = AutoencoderKLWan(base_dim=base_dim, z_dim=z_dim)
    names = original_to_diffusers(vae.state_dict().keys())  # original name -> diffusers name
    unexpected = sorted(set(sd) - set(names))
    missing = sorted(set(names) - set(sd))
    if missing or unexpected:
        raise ValueError(f"Wan VAE: {path} does not fit Wan2.1's VAE (base_dim {base_dim}, z_dim {z_dim}): "
                         f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                         f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    vae.load_state_dict({names[k]: v.to(dtype) for k, v in sd.items()}, strict=True, assign=True)
    return vae


def load_wan_vae(path: str | Path, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32) -> WanVAEDecoder:
    """A :class:`WanVAEDecoder` from a diffusers ``vae/`` folder (``config.json`` +
    ``diffusion_pytorch_model.safetensors``) or Wan's original ``Wan2.1_VAE.pth``. Nothing is downloaded."""
    path = Path(path)
    if path.is_dir():
        for name in (VAE_CONFIG, VAE_WEIGHTS):
            if not (path / name).is_file():
                raise _missing(path / name, name)
        from diffusers import AutoencoderKLWan

        vae = AutoencoderKLWan.from_pretrained(path, torch_dtype=dtype, local_files_only=True, low_cpu_mem_usage=False)
    elif path.is_file():
        vae = _vae_from_original(path, dtype)
    else:
        raise _missing(path, "the VAE folder or .pth file")
    return WanVAEDecoder(vae).to(device)  # already in dtype (a diffusers .to(dtype) would warn)
