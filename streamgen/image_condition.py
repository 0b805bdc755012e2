"""What an image-conditioned or Matrix-Game 2.0 stream carries besides its KV cache: the start image's
cross-attention context and latent condition, and the action modules' caches.

Matrix-Game 2.0 (docs/checkpoints.md) starts every stream from an image, as Wan i2v does:

- the image's **CLIP tokens** ``[257, 1280]`` go through the model's ``img_emb`` and are the whole
  cross-attention context (it has no text); their per-layer K / V are computed once per session;
- the image and grey frames after it are **encoded by the Wan VAE** (``pipe.decoder.encode``):
  ``[image, grey x 4(K-1)]`` -> ``K`` latent frames; with a 4-channel mask (1 on the first latent frame,
  0 after) they are the 20 channels concatenated to the 16 noisy ones at every frame (36 in all).
  The causal encoder's view of the grey frames stops changing a few latent frames after the image, so
  ``COND_FRAMES`` are encoded and later frames reuse the last one (Matrix-Game encodes the whole clip).

The CLIP tokens come, in this order, from ``image_embeds`` (computed elsewhere, ``.npy`` / ``.safetensors`` /
``.pt``), from the pipeline's ``image_encoder`` (``streamgen.image_clip``: the ViT-H/14 of the CLIP file
Matrix-Game ships), else from a **stand-in**: the image's mean colour and 16 x 16 patch colours through a
fixed seeded projection. It makes the stream depend on the image, but it is not CLIP: ``notes`` say which.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

COND_FRAMES = 8  # latent frames of the encoded [image, grey ...]; later frames reuse the last one
GREY = 128  # uint8 of the padding frames (Matrix-Game pads with 0 in [-1, 1])
STANDIN_SEED = 20250812  # the stand-in projection's seed (any fixed number: sessions must agree)


@dataclass
class StreamConditioning:
    """One session's image context and condition (None: not image-conditioned) and action caches."""

    context_kv: list | None = None  # per-layer cross-attention K / V of the image tokens
    cond: torch.Tensor | None = None  # [1, COND_FRAMES, cond_channels, h, w]
    action_caches: Any = None  # streamgen.models.mg2_action.Mg2ActionCaches or None
    notes: dict = field(default_factory=dict)

    def forward_kwargs(self, start: int, frames: int) -> dict:
        """``forward_cached`` keywords for the block of ``frames`` latent frames at ``start``."""
        kw: dict[str, Any] = {"action_caches": self.action_caches}
        if self.cond is not None:
            last = self.cond.shape[1] - 1
            index = torch.tensor([min(f, last) for f in range(start, start + frames)], device=self.cond.device)
            kw["cond"] = self.cond.index_select(1, index)  # [1, frames, Cc, h, w]
        return kw

    def reset(self) -> None:
        """Forget the action caches' frames (the session rebuilds its caches)."""
        if self.action_caches is not None:
            self.action_caches.reset()


def fit_image(image: Any, height: int, width: int) -> np.ndarray:
    """uint8 ``[H, W, 3]`` centre-cropped to the aspect of ``height x width`` and resized to it."""
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or min(img.shape[:2]) < 1:
        raise ValueError(f"start image must be uint8 [H, W, 3], got {img.dtype} {img.shape}")
    h, w = img.shape[:2]
    if h * width > w * height:  # too tall: crop rows
        ch, cw = max(1, round(w * height / width)), w
    else:
        ch, cw = h, max(1, round(h * width / height))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = torch.from_numpy(np.ascontiguousarray(img[top : top + ch, left : left + cw])).permute(2, 0, 1)[None].float()  # [1, 3, h, w]
    out = F.interpolate(crop, size=(height, width), mode="bilinear", antialias=True, align_corners=False)  # [1, 3, H, W]
    return out[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()  # [H, W, 3]


def load_image(path: str | Path) -> np.ndarray:
    """An image file as uint8 ``[H, W, 3]`` (PIL reads it)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.array(im.convert("RGB"))


def load_image_embeds(source: Any, tokens: int, width: int) -> torch.Tensor:
    """CLIP tokens ``[1, tokens, width]`` from a tensor / array or a ``.npy`` / ``.safetensors`` / ``.pt`` file."""
    data = source
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"image embeddings file {path} does not exist")
        if path.suffix == ".npy":
            data = np.load(path)
        elif path.suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(str(path))
            if len(tensors) != 1:
                raise ValueError(f"{path}: expected one tensor of CLIP tokens, found {sorted(tensors)}")
            data = next(iter(tensors.values()))
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    x = torch.as_tensor(np.asarray(data) if not isinstance(data, torch.Tensor) else data).float()
    if x.ndim == 2:
        x = x[None]
    if tuple(x.shape) != (1, tokens, width):
        raise ValueError(f"image embeddings of shape {tuple(x.shape)}: expected [{tokens}, {width}] (CLIP ViT-H/14 tokens)")
    return x


def standin_embeds(image: np.ndarray, tokens: int, width: int) -> torch.Tensor:
    """The stand-in for CLIP tokens ``[1, tokens, width]``: mean and patch colours of ``image`` in [-1, 1]
    through a fixed seeded projection (not CLIP; see the module doc)."""
    unit = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1  # [1, 3, H, W]
    side = max(1, round((tokens - 1) ** 0.5))
    patches = F.adaptive_avg_pool2d(unit, side).flatten(2).transpose(1, 2)  # [1, side*side, 3]
    feats = torch.cat([unit.mean(dim=(2, 3))[:, None], patches], dim=1)[:, :tokens]  # [1, <=tokens, 3]
    feats = F.pad(feats, (0, 0, 0, tokens - feats.shape[1]))  # [1, tokens, 3]
    proj = torch.randn(3, width, generator=torch.Generator().manual_seed(STANDIN_SEED))
    return feats @ proj  # [1, tokens, width]


def stream_conditioning(pipe: Any, image: Any = None, image_embeds: Any = None) -> StreamConditioning | None:
    """The conditioning of a new session of ``pipe`` (None when its model needs none)."""
    cfg, model = pipe.config, pipe.model
    caches = model.new_action_caches(1, pipe.dtype, pipe.device)
    ic = cfg.image_conditioning
    if ic is None:
        if image is not None or image_embeds is not None:
            raise ValueError(f"model {pipe.name!r} is not image-conditioned; it takes no start image")
        return StreamConditioning(action_caches=caches) if caches is not None else None
    if not getattr(pipe.decoder, "can_encode", False):
        raise ValueError(f"model {pipe.name!r} starts from an image but its decoder {type(pipe.decoder).__name__} cannot "
                         "encode one; give the folder a Wan VAE (Wan2.1_VAE.pth) or the tiny decoder")
    height, width = cfg.latent_height * cfg.spatial_upsample, cfg.latent_width * cfg.spatial_upsample
    notes: dict[str, Any] = {"start_image": "given" if image is not None else f"mid-grey (uint8 {GREY}): none given"}
    img = fit_image(image, height, width) if image is not None else np.full((height, width, 3), GREY, np.uint8)
    frames = np.full((1 + cfg.temporal_upsample * (COND_FRAMES - 1), height, width, 3), GREY, np.uint8)
    frames[0] = img
    with torch.inference_mode():
        latent = pipe.decoder.encode(frames).to(pipe.device, pipe.dtype)  # [1, COND_FRAMES, 16, h, w]
        mask = torch.zeros(1, latent.shape[1], ic.mask_channels, *latent.shape[3:], device=pipe.device, dtype=pipe.dtype)
        mask[:, 0] = 1  # the first latent frame is the given image
        cond = torch.cat([mask, latent], dim=2)  # [1, COND_FRAMES, 4 + 16, h, w]
        encoder = getattr(pipe, "image_encoder", None)
        if image_embeds is not None:
            clip = load_image_embeds(image_embeds, ic.clip_tokens, ic.clip_dim)
            notes["image_embeds"] = "given"
        elif encoder is not None:
            clip = encoder.encode(img)  # [1, 257, 1280]
            notes["image_embeds"] = "CLIP (the pipeline's image encoder)"
        else:
            clip = standin_embeds(img, ic.clip_tokens, ic.clip_dim)
            notes["image_embeds"] = "stand-in (image colours through a fixed projection; not CLIP)"
        context_kv = model.encode_image(clip.to(pipe.device, pipe.dtype))
    return StreamConditioning(context_kv, cond, caches, notes)
