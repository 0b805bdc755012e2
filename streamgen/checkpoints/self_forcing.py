"""Self-Forcing / LongLive student checkpoints.

Their training code saves ``{"generator": sd, "generator_ema": sd, ...}`` (``torch.save``), where each
``sd`` is the state dict of a wrapper whose ``model`` attribute is a Wan2.1-named causal transformer,
so keys read ``model.blocks.0.self_attn.q.weight``. FSDP / activation checkpointing / torch.compile
may add ``_fsdp_wrapped_module.``, ``_checkpoint_wrapped_module.`` or ``_orig_mod.`` segments.
The EMA weights are the ones their inference uses (``--use_ema``), so they are preferred here.
A safetensors file cannot nest dicts, so converted copies are either one flat generator state dict
(``model.``-prefixed keys) or flat keys ``generator_ema.model....``; both are accepted.
LongLive ships its LoRA separately; merging it is not handled here.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

LAYOUT = "self_forcing"
GENERATOR_KEYS = ("generator_ema", "generator")
_WRAPPER_SEGMENTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")


def regroup_flat(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """``{"generator_ema.model.x": t, ...}`` (a flattened training checkpoint) -> ``{"generator_ema": {"model.x": t}}``.

    Anything else is returned unchanged. Entries outside the generator keys (critic, optimiser) are dropped.
    """
    if not any(isinstance(k, str) and k.split(".", 1)[0] in GENERATOR_KEYS and "." in k for k in obj):
        return obj
    grouped: dict[str, dict[str, Any]] = {}
    for key, value in obj.items():
        head, _, rest = key.partition(".")
        if head in GENERATOR_KEYS and rest:
            grouped.setdefault(head, {})[rest] = value
    return grouped


def is_training_checkpoint(obj: Any) -> bool:
    return isinstance(obj, Mapping) and any(isinstance(obj.get(k), Mapping) for k in GENERATOR_KEYS)


def pick_generator(obj: Mapping[str, Any], *, ema: bool = True) -> tuple[str, Mapping[str, torch.Tensor]]:
    """The generator state dict of a training checkpoint: ``generator_ema`` first when ``ema``."""
    order = GENERATOR_KEYS if ema else GENERATOR_KEYS[::-1]
    for key in order:
        sd = obj.get(key)
        if isinstance(sd, Mapping) and sd:
            return key, sd
    raise KeyError(
        f"checkpoint has no non-empty {' / '.join(GENERATOR_KEYS)} entry; its top-level keys are {sorted(obj)[:20]}"
    )


def strip_wrappers(sd: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], bool]:
    """Remove wrapper segments and a common ``model.`` / ``module.`` prefix; True when anything was removed."""
    out: dict[str, torch.Tensor] = {}
    changed = False
    for key, value in sd.items():
        new = key
        for seg in _WRAPPER_SEGMENTS:
            new = new.replace(seg, "")
        changed |= new != key
        out[new] = value
    for prefix in ("module.", "model."):
        if out and all(k.startswith(prefix) for k in out):
            out = {k[len(prefix):]: v for k, v in out.items()}
            changed = True
    return out, changed
