"""The diffusers ``WanTransformer3DModel`` layout <-> ours (= the original Wan2.1 names).

Read from diffusers' ``transformer_wan.py`` (0.42): the math is the same as Wan2.1 (time sinusoid
``[cos | sin]`` with frequencies ``10000^(-i/half)``, 3-D RoPE with the head split
``d - 4(d//6), 2(d//6), 2(d//6)`` on interleaved channel pairs, qk RMSNorm across heads, GELU-tanh
MLP, shift/scale/gate order of the six modulation vectors). Only the names differ, plus two details
that do not change the weights: diffusers computes the time sinusoid in fp32 where Wan uses fp64, and
its cross-attention LayerNorm is called ``norm2`` where Wan calls it ``norm3``.

This module never imports diffusers: it works on plain state dicts and config dicts.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from streamgen.config import ModelConfig
from streamgen.checkpoints.keymap import rename_state_dict
from streamgen.checkpoints.shapes import merge_config

LAYOUT = "diffusers"

# (ours, diffusers) module paths outside the blocks.
TOP: list[tuple[str, str]] = [
    ("patch_embedding", "patch_embedding"),
    ("text_embedding.0", "condition_embedder.text_embedder.linear_1"),
    ("text_embedding.2", "condition_embedder.text_embedder.linear_2"),
    ("time_embedding.0", "condition_embedder.time_embedder.linear_1"),
    ("time_embedding.2", "condition_embedder.time_embedder.linear_2"),
    ("time_projection.1", "condition_embedder.time_proj"),
    ("head.head", "proj_out"),
    ("head.modulation", "scale_shift_table"),
]

# (ours, diffusers) module paths inside ``blocks.N.``.
BLOCK: list[tuple[str, str]] = [
    ("self_attn.q", "attn1.to_q"),
    ("self_attn.k", "attn1.to_k"),
    ("self_attn.v", "attn1.to_v"),
    ("self_attn.o", "attn1.to_out.0"),
    ("self_attn.norm_q", "attn1.norm_q"),
    ("self_attn.norm_k", "attn1.norm_k"),
    ("cross_attn.q", "attn2.to_q"),
    ("cross_attn.k", "attn2.to_k"),
    ("cross_attn.v", "attn2.to_v"),
    ("cross_attn.o", "attn2.to_out.0"),
    ("cross_attn.norm_q", "attn2.norm_q"),
    ("cross_attn.norm_k", "attn2.norm_k"),
    ("norm3", "norm2"),
    ("ffn.0", "ffn.net.0.proj"),
    ("ffn.2", "ffn.net.2"),
    ("modulation", "scale_shift_table"),
]


def is_diffusers_layout(keys) -> bool:
    keys = list(keys)
    return any(k.startswith("condition_embedder.") or ".attn1." in k for k in keys)


def diffusers_to_ours(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a diffusers transformer state dict to our (= Wan2.1) names; tensors are not copied."""
    return rename_state_dict(sd, TOP, BLOCK, reverse=True, layout=LAYOUT)


def ours_to_diffusers(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename our (= Wan2.1) state dict to diffusers' names; tensors are not copied."""
    return rename_state_dict(sd, TOP, BLOCK, reverse=False, layout="wan2.1")


def _unsupported(config: Mapping[str, Any]) -> None:
    for key in ("image_dim", "added_kv_proj_dim", "pos_embed_seq_len"):
        if config.get(key) is not None:
            raise ValueError(
                f"diffusers config has {key}={config[key]!r}: image-conditioned Wan (I2V / FLF2V) is not "
                "supported, only the text-to-video transformer"
            )


def config_from_diffusers(
    config: Mapping[str, Any], *, base: ModelConfig | None = None, overrides: Mapping[str, Any] | None = None,
    name: str | None = None,
) -> ModelConfig:
    """ModelConfig from a ``WanTransformer3DModel`` config dict (its ``config.json``)."""
    _unsupported(config)
    heads = int(config.get("num_attention_heads", 40))
    head_dim = int(config.get("attention_head_dim", 128))
    in_channels = int(config.get("in_channels", 16))
    shapes = {
        "dim": heads * head_dim,
        "num_heads": heads,
        "in_channels": in_channels,
        "out_channels": int(config.get("out_channels") or in_channels),
        "text_dim": int(config.get("text_dim", 4096)),
        "freq_dim": int(config.get("freq_dim", 256)),
        "ffn_dim": int(config.get("ffn_dim", 13824)),
        "num_layers": int(config.get("num_layers", 40)),
        "patch": tuple(config.get("patch_size", (1, 2, 2))),
        # diffusers' WanAttention builds and applies its q / k RMSNorm whatever ``qk_norm`` says.
        "qk_norm": True,
        "cross_attn_norm": bool(config.get("cross_attn_norm", True)),
        "eps": float(config.get("eps", 1e-6)),
        "rope_max_positions": int(config.get("rope_max_seq_len", 1024)),
    }
    return merge_config(shapes, base=base, overrides=overrides, name=name)


def diffusers_config_from(config: ModelConfig) -> dict[str, Any]:
    """The ``WanTransformer3DModel`` constructor arguments of one of our configs (for export / tests)."""
    if not config.qk_norm:
        raise ValueError(f"config {config.name!r} has qk_norm=False; diffusers' Wan always applies q / k RMSNorm")
    return {
        "patch_size": tuple(config.patch),
        "num_attention_heads": config.num_heads,
        "attention_head_dim": config.head_dim,
        "in_channels": config.in_channels,
        "out_channels": config.out_channels,
        "text_dim": config.text_dim,
        "freq_dim": config.freq_dim,
        "ffn_dim": config.ffn_dim,
        "num_layers": config.num_layers,
        "cross_attn_norm": config.cross_attn_norm,
        "qk_norm": "rms_norm_across_heads",
        "eps": config.eps,
        "rope_max_seq_len": config.rope_max_positions,
    }
