"""The conditioning of a batch, encoded for one model.

A batch is a dict of tensors: the generated streams (``latents`` ``[B, F, C, H, W]``, and ``audio``
``[B, Fa, Ca]`` for joint models; see ``modalities.py``); ``text`` tokens ``[B, L, text_dim]`` (absent =
the empty prompt) or a ready ``text_kv`` (per-layer cross-attention K / V of one model); action windows
``keyboard`` ``[B, F, R, K]`` and ``mouse`` ``[B, F, R, M]`` (one window of R raw rows per latent frame,
as ``streamgen.actions`` builds them at inference), given to the model as ``actions=ActionInput``;
every other key the model's forwards accept is passed to them by keyword (others, such as raw emulator
actions kept for evaluation, are left out), unchanged for full-sequence forwards and sliced per
block for streaming forwards when listed in ``DataConfig.frame_keys`` (those run along dim 1 with
``F * r`` entries: r = 1 at the latent rate, r = 4 at the raw frame rate).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch

from streamgen.actions import ActionSpec
from streamgen.models.action_modules import ActionInput

RESERVED = ("latents", "audio", "text", "text_kv", "keyboard", "mouse")


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
            if isinstance(value, ActionInput):
                value = value.frames(start, n)
            elif key in self.frame_keys and torch.is_tensor(value) and value.dim() >= 2:
                if value.shape[1] % self.num_frames:
                    raise ValueError(
                        f"batch[{key!r}] has {value.shape[1]} entries along dim 1, not a multiple of the "
                        f"{self.num_frames} latent frames"
                    )
                r = value.shape[1] // self.num_frames
                value = value[:, start * r : (start + n) * r]  # [B, n*r, ...]
            out[key] = value
        return out


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
    accepted = _keywords(model)
    extras = {k: v for k, v in batch.items() if k not in RESERVED and (accepted is None or k in accepted)}
    if "keyboard" in batch or "mouse" in batch:
        extras["actions"] = _actions(model.config, batch)
    if "text_kv" in batch and not uncond:
        text_kv = batch["text_kv"]
    else:
        text_kv = model.encode_text(text_tokens(model, batch, uncond=uncond))
    return Cond(text_kv, extras, tuple(frame_keys), batch["latents"].shape[1])


def _keywords(model) -> set[str] | None:
    """Keyword arguments the model's forwards accept (None: any). Batch keys the model does not take
    (bookkeeping such as the emulator's raw actions kept for evaluation) stay out of its calls."""
    names: set[str] = set()
    cls = type(model)  # the class's methods: a sharding wrapper may hide the signature of the instance's
    for method in (cls.forward, getattr(cls, "forward_cached", cls.forward)):
        params = inspect.signature(method).parameters.values()
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return None
        names |= {p.name for p in params}
    return names


def _actions(config, batch: dict) -> ActionInput:
    """Action windows of the batch; a missing kind (keys only, mouse only) is all zeros."""
    ref = batch.get("keyboard", batch.get("mouse"))
    b, f, rows = ref.shape[:3]
    a = config.actions
    if a is None:
        raise ValueError(f"the batch carries actions but model {config.name!r} has no action modules")
    zeros = lambda width: torch.zeros(b, f, rows, width, dtype=ref.dtype, device=ref.device)  # noqa: E731
    return ActionInput(batch.get("keyboard", zeros(len(a.keys))), batch.get("mouse", zeros(len(a.mouse_axes))))


def drop_text(batch: dict, p: float, generator: torch.Generator) -> dict:
    """Classifier-free guidance dropout: each sample's text tokens become the empty prompt with prob ``p``."""
    if p <= 0 or "text" not in batch:
        return batch
    text = batch["text"]
    keep = torch.rand(text.shape[0], generator=generator) >= p  # [B]
    out = dict(batch)
    out["text"] = text * keep.to(text.dtype).to(text.device)[:, None, None]
    return out


def null_actions(config, batch: dict, rows: torch.Tensor | None = None) -> dict:
    """The batch with the action windows of the samples in ``rows`` (bool ``[B]``; None = all) replaced by
    the model's null action (``ActionSpec.null_rows``: no key down, no motion), the unconditional branch of
    action guidance. A batch without actions is returned as it is."""
    present = [k for k in ("keyboard", "mouse") if k in batch]
    if not present:
        return batch
    keyboard, mouse = ActionSpec.from_config(config).null_rows(1)  # [1, K], [1, M]
    out = dict(batch)
    for key, null in zip(("keyboard", "mouse"), (keyboard, mouse)):
        if key not in batch:
            continue
        x = batch[key]  # [B, F, R, width]
        null_t = torch.as_tensor(null[0], dtype=x.dtype, device=x.device).expand_as(x)  # [width] -> [B, F, R, width]
        if rows is None:
            out[key] = null_t.clone()
        else:
            keep = (~rows).to(x.device).view(-1, *([1] * (x.dim() - 1)))  # [B] -> [B, 1, 1, 1]
            out[key] = torch.where(keep, x, null_t)
    return out


def drop_actions(config, batch: dict, p: float, generator: torch.Generator) -> dict:
    """Action dropout (teacher training, for action guidance): each sample's action windows become the
    null action with probability ``p``. Draws from ``generator`` only when the batch carries actions."""
    ref = batch.get("keyboard", batch.get("mouse"))
    if p <= 0 or ref is None:
        return batch
    rows = torch.rand(ref.shape[0], generator=generator) < p  # [B]
    return null_actions(config, batch, rows)


def null_audio(batch: dict, rows: torch.Tensor | None = None) -> dict:
    """The batch with the speech windows ``audio_in`` ``[B, F, R, D]`` of the samples in ``rows`` (bool
    ``[B]``; None = all) replaced by the null speech (zeros: no feature value the extractor produces, not
    even silence's), the unconditional branch of audio guidance. A batch without speech is returned as it is."""
    if "audio_in" not in batch:
        return batch
    x = batch["audio_in"]  # [B, F, R, D]
    out = dict(batch)
    if rows is None:
        out["audio_in"] = torch.zeros_like(x)
    else:
        keep = (~rows).to(x.device).view(-1, *([1] * (x.dim() - 1)))  # [B] -> [B, 1, 1, 1]
        out["audio_in"] = torch.where(keep, x, torch.zeros_like(x))
    return out


def drop_audio(batch: dict, p: float, generator: torch.Generator) -> dict:
    """Audio dropout (teacher training, for audio guidance): each sample's speech windows become the null
    speech with probability ``p``. Draws from ``generator`` only when the batch carries speech."""
    if p <= 0 or "audio_in" not in batch:
        return batch
    rows = torch.rand(batch["audio_in"].shape[0], generator=generator) < p  # [B]
    return null_audio(batch, rows)


def frame_timesteps(t: torch.Tensor | float, batch: int, frames: int, device) -> torch.Tensor:
    """A timestep per sample ``[B]`` (or a scalar) broadcast to ``[B, F]``."""
    t = torch.as_tensor(t, dtype=torch.float32, device=device)
    if t.dim() == 0:
        return t.expand(batch, frames).clone()
    return t.reshape(batch, 1).expand(batch, frames).clone()  # [B, F]
