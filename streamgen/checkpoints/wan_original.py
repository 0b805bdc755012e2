"""The original Wan2.1 layout (``WanModel`` of the Wan repository). Our parameter names are the same,
so this module only infers a :class:`ModelConfig` from the weights and from Wan's ``config.json``.

Wan's folder (e.g. ``Wan2.1-T2V-1.3B``) holds ``config.json`` (``"_class_name": "WanModel"``, with
``dim``, ``ffn_dim``, ``freq_dim``, ``in_dim``, ``out_dim``, ``num_heads``, ``num_layers``, ``eps``,
``model_type``) and ``diffusion_pytorch_model.safetensors`` (or shards plus an index file).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch

from streamgen.config import ModelConfig
from streamgen.checkpoints.keymap import block_indices
from streamgen.checkpoints.shapes import heads_for, merge_config

LAYOUT = "wan_original"


def is_wan_layout(keys) -> bool:
    keys = set(keys)
    return "patch_embedding.weight" in keys and ("text_embedding.0.weight" in keys or "head.head.weight" in keys)


def _need(sd: Mapping[str, torch.Tensor], key: str, source: str) -> torch.Tensor:
    try:
        return sd[key]
    except KeyError:
        raise KeyError(f"{source}: missing {key!r}, which a Wan2.1 transformer state dict must have") from None


def shapes_from_wan_state_dict(sd: Mapping[str, torch.Tensor], *, num_heads: int | None = None,
                               source: str = "Wan2.1 state dict") -> dict[str, Any]:
    """The shape fields of ModelConfig read off the tensors (the head count is not recorded in them)."""
    dim, in_channels, *patch = _need(sd, "patch_embedding.weight", source).shape  # [dim, Cin, pt, ph, pw]
    text_dim = _need(sd, "text_embedding.0.weight", source).shape[1]  # [dim, text_dim]
    freq_dim = _need(sd, "time_embedding.0.weight", source).shape[1]  # [dim, freq_dim]
    ffn_dim = _need(sd, "blocks.0.ffn.0.weight", source).shape[0]  # [ffn_dim, dim]
    head_out = _need(sd, "head.head.weight", source).shape[0]  # [Cout * pt * ph * pw, dim]
    layers = block_indices(sd.keys())
    if layers != list(range(len(layers))):
        raise KeyError(f"{source}: block indices {layers} are not 0..N-1; the checkpoint is incomplete")
    if head_out % math.prod(patch):
        raise ValueError(f"{source}: head.head has {head_out} outputs, not a multiple of patch {tuple(patch)}")
    return {
        "dim": dim,
        "num_heads": heads_for(dim, num_heads, source),
        "in_channels": in_channels,
        "out_channels": head_out // math.prod(patch),
        "text_dim": text_dim,
        "freq_dim": freq_dim,
        "ffn_dim": ffn_dim,
        "num_layers": len(layers),
        "patch": tuple(patch),
        "qk_norm": "blocks.0.self_attn.norm_q.weight" in sd,
        "cross_attn_norm": "blocks.0.norm3.weight" in sd,
    }


def config_from_wan_state_dict(
    sd: Mapping[str, torch.Tensor], *, wan_config: Mapping[str, Any] | None = None,
    base: ModelConfig | None = None, overrides: Mapping[str, Any] | None = None, name: str | None = None,
) -> ModelConfig:
    """ModelConfig of a Wan2.1-named state dict; ``wan_config`` (Wan's config.json) supplies the head
    count and eps when given, else heads are ``dim // 128`` (Wan's head width) unless overridden."""
    wan_config = dict(wan_config or {})
    overrides = dict(overrides or {})
    model_type = wan_config.get("model_type", "t2v")
    if model_type != "t2v":
        raise ValueError(f"Wan config model_type={model_type!r}: only the text-to-video transformer ('t2v') loads")
    stated = overrides.get("num_heads", wan_config.get("num_heads"))
    shapes = shapes_from_wan_state_dict(sd, num_heads=stated)
    for ours, theirs in (("dim", "dim"), ("ffn_dim", "ffn_dim"), ("num_layers", "num_layers"), ("in_channels", "in_dim")):
        if theirs in wan_config and int(wan_config[theirs]) != shapes[ours]:
            raise ValueError(
                f"Wan config says {theirs}={wan_config[theirs]} but the weights have {ours}={shapes[ours]}"
            )
    if "eps" in wan_config:
        shapes["eps"] = float(wan_config["eps"])
    if "text_len" in wan_config:
        shapes["text_len"] = int(wan_config["text_len"])
    return merge_config(shapes, base=base, overrides=overrides, name=name)


def wan_config_from(config: ModelConfig) -> dict[str, Any]:
    """Wan's ``config.json`` for one of our configs (for export)."""
    return {
        "_class_name": "WanModel",
        "model_type": "t2v",
        "patch_size": list(config.patch),
        "text_len": config.text_len,
        "in_dim": config.in_channels,
        "dim": config.dim,
        "ffn_dim": config.ffn_dim,
        "freq_dim": config.freq_dim,
        "text_dim": config.text_dim,
        "out_dim": config.out_channels,
        "num_heads": config.num_heads,
        "num_layers": config.num_layers,
        "qk_norm": config.qk_norm,
        "cross_attn_norm": config.cross_attn_norm,
        "eps": config.eps,
    }
