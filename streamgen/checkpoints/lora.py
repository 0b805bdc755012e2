"""LongLive's LoRA, merged into the transformer's weights at load.

LongLive (``utils/lora_utils.py`` of its repository) wraps every ``nn.Linear`` inside each causal
attention block with peft: ``self_attn.{q,k,v,o}``, ``cross_attn.{q,k,v,o}``, ``ffn.0`` and ``ffn.2``,
rank 256 and alpha 256 in its released inference config, no dropout. ``lora.pt`` holds
``{"generator_lora": sd}`` (or ``sd`` itself), where ``sd`` is peft's state dict of the wrapped
transformer: ``base_model.model.blocks.N.self_attn.q.lora_A.weight`` ``[r, in]`` and ``...lora_B.weight``
``[out, r]`` (``lora_A.default.weight`` when saved from the module's own ``state_dict``). peft's forward
is ``W x + b + (alpha / r) B A x``, so merging adds ``(alpha / r) B A`` to ``W`` (computed in fp32,
stored in the weight's dtype): the merged model is the LoRA model, at no cost per step.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import torch

from streamgen.checkpoints.self_forcing import strip_wrappers

LORA_KEYS = ("generator_lora", "lora")
_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<part>[AB])(?:\.[A-Za-z0-9_]+)?\.weight$")
_PREFIXES = ("base_model.model.", "base_model.")


def lora_pairs(obj: Mapping[str, Any], source: str = "LoRA") -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{module path in our names: (A [r, in], B [out, r])}`` from a LoRA file's contents."""
    for key in LORA_KEYS:
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    parts: dict[str, dict[str, torch.Tensor]] = {}
    other = []
    for key, value in obj.items():
        name = key
        for prefix in _PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix):]
                break
        m = _KEY.match(name)
        if m is None or not isinstance(value, torch.Tensor):
            other.append(key)
            continue
        parts.setdefault(m.group("module"), {})[m.group("part")] = value
    if other:
        raise ValueError(f"{source}: entries that are not peft lora_A / lora_B weights: {other[:8]}")
    if not parts:
        raise ValueError(f"{source}: no lora_A / lora_B weights (top-level keys: {sorted(obj)[:8]})")
    unpaired = sorted(m for m, p in parts.items() if set(p) != {"A", "B"})
    if unpaired:
        raise ValueError(f"{source}: modules with lora_A or lora_B alone: {unpaired[:8]}")
    renamed, _ = strip_wrappers({m: m for m in parts})  # FSDP / compile segments, a leading model. prefix
    return {new: (parts[old]["A"], parts[old]["B"]) for new, old in renamed.items()}


@torch.no_grad()
def merge_lora(model: torch.nn.Module, obj: Mapping[str, Any], *, alpha: float | None = None,
               source: str = "LoRA") -> list[str]:
    """Add ``(alpha / r) B A`` to each targeted linear of ``model``; ``alpha`` None = the rank (LongLive's
    alpha equals its rank). Returns the merged module paths; a path the model lacks or a shape that does not
    fit raises, naming it."""
    pairs = lora_pairs(obj, source)
    modules = dict(model.named_modules())
    missing = sorted(m for m in pairs if not isinstance(modules.get(m), torch.nn.Linear))
    if missing:
        raise KeyError(f"{source}: LoRA targets modules that are not linear layers of the model: {missing[:8]}")
    for path, (a, b) in pairs.items():
        weight = modules[path].weight  # [out, in]
        rank = a.shape[0]
        if a.ndim != 2 or b.ndim != 2 or b.shape[1] != rank or (b.shape[0], a.shape[1]) != tuple(weight.shape):
            raise ValueError(f"{source}: {path}: lora_A {tuple(a.shape)} / lora_B {tuple(b.shape)} do not fit the "
                             f"weight {tuple(weight.shape)}")
        scale = (rank if alpha is None else alpha) / rank
        delta = b.to(weight.device, torch.float32) @ a.to(weight.device, torch.float32)  # [out, in]
        weight.copy_((weight.float() + scale * delta).to(weight.dtype))
    return sorted(pairs)
