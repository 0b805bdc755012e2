"""Layout detection and model building without a second copy of the weights.

``load_state_dict_any`` takes any of the three public layouts of Wan-family weights (original Wan2.1,
diffusers ``WanTransformer3DModel``, Self-Forcing / LongLive training checkpoints) and returns our
state dict; ``build_model`` creates ``CausalDiT`` on the ``meta`` device (no memory) and loads with
``assign=True``, so the model's parameters *are* the loaded tensors (a 14B model needs its weights
once, not twice).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from streamgen.config import ModelConfig
from streamgen.checkpoints import self_forcing, wan_diffusers, wan_original
from streamgen.models.dit import CausalDiT


def load_state_dict_any(sd: Mapping[str, Any], *, ema: bool = True) -> tuple[str, dict[str, torch.Tensor]]:
    """Detect the layout of ``sd`` and return ``(layout_name, state dict in our names)``.

    layout_name is ``"wan_original"`` (also our own format: the names are the same), ``"diffusers"``
    or ``"self_forcing"`` (a ``generator`` / ``generator_ema`` checkpoint, or a flat state dict with the
    ``model.`` prefix of their wrapper). Tensors are renamed, never copied.
    """
    layout = None
    sd = self_forcing.regroup_flat(sd)
    if self_forcing.is_training_checkpoint(sd):
        _, sd = self_forcing.pick_generator(sd, ema=ema)
        layout = self_forcing.LAYOUT
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise TypeError(f"state dict entries {bad[:8]} are not tensors; top-level keys: {sorted(sd)[:20]}")
    stripped, changed = self_forcing.strip_wrappers(sd)
    if changed and layout is None:
        layout = self_forcing.LAYOUT
    if wan_diffusers.is_diffusers_layout(stripped):
        return layout or wan_diffusers.LAYOUT, wan_diffusers.diffusers_to_ours(stripped)
    if wan_original.is_wan_layout(stripped):
        return layout or wan_original.LAYOUT, stripped
    raise ValueError(
        "unrecognised state dict layout: expected Wan2.1 names (patch_embedding, text_embedding.0, blocks.N.self_attn...), "
        f"diffusers names (condition_embedder..., blocks.N.attn1...) or a generator/generator_ema checkpoint; "
        f"first keys: {list(stripped)[:8]}"
    )


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of ``CausalDiT(config)``, computed on the meta device (free)."""
    with torch.device("meta"):
        model = CausalDiT(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_state_dict(config: ModelConfig, sd: Mapping[str, torch.Tensor], source: str = "state dict") -> None:
    """Raise one readable error listing missing, unexpected and mis-shaped keys."""
    want = expected_shapes(config)
    missing = sorted(set(want) - set(sd))
    unexpected = sorted(set(sd) - set(want))
    shapes = [f"{k}: {tuple(sd[k].shape)} vs model {want[k]}" for k in want if k in sd and tuple(sd[k].shape) != want[k]]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)}: {missing[:8]}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)}: {unexpected[:8]}")
    if shapes:
        problems.append(f"shape mismatch {len(shapes)}: {shapes[:8]}")
    if problems:
        raise ValueError(f"{source} does not fit config {config.name!r}: " + "; ".join(problems))


def build_model(
    config: ModelConfig,
    sd: dict[str, torch.Tensor],
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    source: str = "state dict",
) -> CausalDiT:
    """``CausalDiT`` built on ``meta`` and loaded with ``assign=True``.

    ``sd`` must already be in our names. Tensors already on ``device`` with ``dtype`` become the
    parameters as they are (no copy); others are moved / cast one at a time, and ``sd`` is emptied as it
    goes so that the peak stays near one copy of the weights plus one tensor.
    """
    check_state_dict(config, sd, source)
    with torch.device("meta"):
        model = CausalDiT(config)
    device = torch.device(device) if device is not None else None
    ready: dict[str, torch.Tensor] = {}
    for key in list(sd):
        tensor = sd.pop(key)
        if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
            tensor = tensor.to(dtype=dtype)
        if device is not None and tensor.device != device:
            tensor = tensor.to(device=device)
        ready[key] = tensor
    model.load_state_dict(ready, strict=True, assign=True)
    leftovers = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftovers:
        raise RuntimeError(f"{source}: parameters still on the meta device after loading: {leftovers[:8]}")
    return model
