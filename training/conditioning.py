"""How the training code calls a model with whatever conditioning the batch carries.

A batch is a dict of tensors: ``latents`` ``[B, F, C, H, W]``; ``text`` tokens ``[B, L, text_dim]``
(absent = unconditional) or a ready ``text_kv`` (per-layer cross-attention K / V of one model); every
other key (actions, audio, ...) is passed to the model by keyword, unchanged for full-sequence forwards
and sliced per block for streaming forwards when the key is listed in ``DataConfig.frame_keys``
(those run along dim 1 with ``F * r`` entries: r = 1 at the latent rate, r = 4 at the raw frame rate).

Nothing here knows what the extras mean, so the same code trains ``tiny`` and a world model.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

RESERVED = ("latents", "text", "text_kv")


@dataclass
class Cond:
    """Conditioning of one batch for one model."""

    text_kv: list
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    frame_keys: tuple[str, ...] = ()
    num_frames: int = 0  # frames the per-frame extras cover (the clip length)

    def for_block(self, start: int, n: int) -> dict[str, torch.Tensor]:
        """Extras of frames ``start .. start + n - 1`` (per-frame keys sliced along dim 1)."""
        out = {}
        for key, value in self.extras.items():
            if key in self.frame_keys and torch.is_tensor(value) and value.dim() >= 2:
                if value.shape[1] % self.num_frames:
                    raise ValueError(
                        f"batch[{key!r}] has {value.shape[1]} entries along dim 1, not a multiple of the "
                        f"{self.num_frames} latent frames"
                    )
                r = value.shape[1] // self.num_frames
                value = value[:, start * r : (start + n) * r]  # [B, n*r, ...]
            out[key] = value
        return out

    def select(self, index: torch.Tensor) -> "Cond":
        """The rows ``index`` of the batch (text K / V and extras)."""
        kv = [(k[index] if k.shape[0] > 1 else k, v[index] if v.shape[0] > 1 else v) for k, v in self.text_kv]
        extras = {k: v[index] if torch.is_tensor(v) else v for k, v in self.extras.items()}
        return Cond(kv, extras, self.frame_keys, self.num_frames)


def text_tokens(model, batch: dict, *, uncond: bool = False) -> torch.Tensor:
    """The batch's text tokens ``[B, L, text_dim]``; zeros (the empty prompt) when absent or ``uncond``."""
    c = model.config
    lat = batch["latents"]
    text = batch.get("text")
    if text is None or uncond:
        dtype = next(model.parameters()).dtype
        return torch.zeros(lat.shape[0], c.text_len, c.text_dim, dtype=dtype, device=lat.device)
    return text


def make_cond(model, batch: dict, *, frame_keys: tuple[str, ...] = (), uncond: bool = False) -> Cond:
    """Encode the batch's conditioning for ``model`` (gradient flows into trainable text layers when
    grad mode is on)."""
    extras = {k: v for k, v in batch.items() if k not in RESERVED}
    if "text_kv" in batch and not uncond:
        text_kv = batch["text_kv"]
    else:
        text_kv = model.encode_text(text_tokens(model, batch, uncond=uncond))
    return Cond(text_kv, extras, tuple(frame_keys), batch["latents"].shape[1])


def drop_text(batch: dict, p: float, generator: torch.Generator) -> dict:
    """Classifier-free guidance dropout: each sample's text tokens become the empty prompt with prob ``p``."""
    if p <= 0 or "text" not in batch:
        return batch
    text = batch["text"]
    keep = torch.rand(text.shape[0], generator=generator) >= p  # [B]
    out = dict(batch)
    out["text"] = text * keep.to(text.dtype).to(text.device)[:, None, None]
    return out


def velocity(model, x: torch.Tensor, t: torch.Tensor, cond: Cond, **kwargs) -> torch.Tensor:
    """Full-sequence forward (bidirectional, or masked via ``mask=``)."""
    return model(x, t, cond.text_kv, **kwargs, **cond.extras)


def velocity_cached(model, x: torch.Tensor, t: torch.Tensor, cond: Cond, cache, start: int) -> torch.Tensor:
    """One streaming block at absolute frame ``start`` through the rolling cache."""
    return model.forward_cached(x, t, cond.text_kv, cache, start, **cond.for_block(start, x.shape[1]))


def frame_timesteps(t: torch.Tensor | float, batch: int, frames: int, device) -> torch.Tensor:
    """A timestep per sample ``[B]`` (or a scalar) broadcast to ``[B, F]``."""
    t = torch.as_tensor(t, dtype=torch.float32, device=device)
    if t.dim() == 0:
        return t.expand(batch, frames).clone()
    return t.reshape(batch, 1).expand(batch, frames).clone()  # [B, F]
