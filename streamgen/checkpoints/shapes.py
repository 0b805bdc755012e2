"""Merging the shape fields read from a checkpoint into a full :class:`ModelConfig`.

A public checkpoint fixes the transformer's shapes (width, heads, layers, ...). Everything else in
``ModelConfig`` (latent grid, streaming window, sampler) is a choice of the user: it comes from a
``base`` config (default: the ``wan2.1-1.3b`` preset, whose streaming settings are those of
Self-Forcing / LongLive) and from explicit ``overrides``.
"""
from __future__ import annotations

from typing import Any, Mapping

from streamgen.config import ModelConfig
from streamgen.presets import preset

# The fields a checkpoint's weights (or its own config file) determine.
SHAPE_FIELDS = (
    "in_channels", "out_channels", "dim", "ffn_dim", "num_heads", "num_layers", "freq_dim", "text_dim",
    "patch", "qk_norm", "cross_attn_norm",
)

# The released Wan2.1 transformers by width: 1.3B has 12 heads of 128, 14B has 40 heads of 128. Any other
# width is not a released Wan model, so its head count must be stated (the weights do not record it).
WAN_HEADS = {1536: 12, 5120: 40}


def heads_for(dim: int, stated: int | None, source: str) -> int:
    """Head count: the stated one (a config, the base folder, streamgen.json, overrides), else the released
    Wan2.1 model of that width; an error naming where to state it otherwise."""
    if stated is not None:
        return int(stated)
    if dim in WAN_HEADS:
        return WAN_HEADS[dim]
    raise ValueError(
        f"{source}: num_heads for dim={dim} is not recorded in the weights and no released Wan2.1 model has "
        f"that width ({sorted(WAN_HEADS)}); state it: \"num_heads\" in the folder's streamgen.json, the base "
        "folder's config.json, or overrides={'num_heads': N}"
    )


def merge_config(
    shapes: Mapping[str, Any], *, base: ModelConfig | None = None, overrides: Mapping[str, Any] | None = None,
    name: str | None = None,
) -> ModelConfig:
    """``base`` fields, replaced by the checkpoint's ``shapes``, replaced by ``overrides``."""
    data = (base or preset("wan2.1-1.3b")).to_dict()
    data.update(shapes)
    if name is not None:
        data["name"] = name
    data.update(overrides or {})
    return ModelConfig.from_dict(data)
