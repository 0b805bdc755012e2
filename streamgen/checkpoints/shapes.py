"""Merging the shape fields read from a checkpoint into a full :class:`ModelConfig`.

A public checkpoint fixes the transformer's shapes (width, heads, layers, ...). Everything else in
``ModelConfig`` (latent grid, streaming window, sampler) is a choice of the user: it comes from a
``base`` config (default: the ``wan2.1-1.3b`` preset, whose streaming settings are those of
Self-Forcing / LongLive) and from explicit ``overrides``.
"""
from __future__ import annotations

from typing import Any, Mapping

from streamgen.config import ModelConfig, preset

# The fields a checkpoint's weights (or its own config file) determine.
SHAPE_FIELDS = (
    "in_channels", "out_channels", "dim", "ffn_dim", "num_heads", "num_layers", "freq_dim", "text_dim",
    "patch", "qk_norm", "cross_attn_norm",
)

# Wan2.1 uses 128-wide heads at every size (1.3B: 12 x 128; 14B: 40 x 128), so the head count of a
# checkpoint that does not state it is dim // 128.
WAN_HEAD_DIM = 128


def heads_for(dim: int, stated: int | None, source: str) -> int:
    """Head count: the stated one, else Wan's 128-wide heads; an error when neither fits."""
    if stated is not None:
        return int(stated)
    if dim % WAN_HEAD_DIM == 0:
        return dim // WAN_HEAD_DIM
    raise ValueError(
        f"{source}: cannot infer num_heads for dim={dim} (the weights do not record it and dim is not a "
        f"multiple of Wan's head width {WAN_HEAD_DIM}); pass overrides={{'num_heads': ...}}"
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
