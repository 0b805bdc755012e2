"""Matrix-Game 2.0's released transformer (``CausalWanModel``, i2v, keyboard and mouse) onto our model.

Its ``config.json`` holds Wan's shape fields (``dim``, ``num_heads``, ``in_dim`` 36, ...), its streaming
window (``local_attn_size``, ``sink_size``) and ``action_config`` (``blocks``, ``keyboard_dim_in``,
``enable_mouse``, ``mouse_dim_in``, ``hidden_size``, ``mouse_hidden_dim``, ``keyboard_hidden_dim``,
``heads_num``, ``windows_size``, ``vae_time_compression_ratio``, ``mouse_qk_dim_list``, ``rope_theta``,
``qkv_bias``, ...). Its weights carry Wan2.1's names with ``img_emb.proj.*`` (the CLIP projection) and
``blocks.N.action_model.*`` in the action blocks, and no ``text_embedding`` (it has no text); a
distilled file may prefix every key with ``model.`` (its training wrapper). Names map to ours with one
rename, ``action_model`` -> ``action``; ``build_model`` then checks that every key is consumed.

The keyboard vector's meaning is not in the files: it follows the release's three vocabularies
(``pipeline/causal_inference.py``), picked by ``keyboard_dim_in``, as ``KeyboardEvent.code`` names.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Mapping

import torch

from streamgen.checkpoints.keymap import block_indices
from streamgen.checkpoints.shapes import heads_for, merge_config
from streamgen.config import ActionConfig, ImageConditioning, ModelConfig

log = logging.getLogger("streamgen.checkpoints")

# keyboard_dim_in -> the key for each entry: universal (W S A D), gta_drive (W S), templerun (no-op, jump,
# slide, turn left, turn right, side left, side right: the release's q, w, s, z, c, a, d).
KEYBOARDS = {4: ("KeyW", "KeyS", "KeyA", "KeyD"), 2: ("KeyW", "KeyS"),
             7: ("KeyQ", "KeyW", "KeyS", "KeyZ", "KeyC", "KeyA", "KeyD")}
# The mouse vector is (pitch, yaw), positive looking up / right (the release's I and L keys: [0.1, 0], [0, 0.1]).
# Wire deltas are pixels with dy growing down, hence -dy; the scale maps 10 px in one frame to the release's
# per-frame camera step of 0.1.
MOUSE_AXES = ("-dy", "dx")
MOUSE_SCALE = 0.01
TEMPLERUN_STEPS = (1000.0, 750.0, 500.0, 250.0)  # inference_templerun.yaml (the others: 1000, 666, 333)


def is_matrix_game_config(data: Any) -> bool:
    return isinstance(data, dict) and "action_config" in data


def to_ours(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Matrix-Game names (``model.`` already stripped) -> ours; tensors are not copied."""
    return {k.replace(".action_model.", ".action."): v for k, v in sd.items()}


def _need(sd: Mapping[str, torch.Tensor], key: str, source: str) -> torch.Tensor:
    try:
        return sd[key]
    except KeyError:
        raise KeyError(f"{source}: missing {key!r}, which a Matrix-Game 2.0 transformer must have") from None


def action_config(mg: Mapping[str, Any], source: str, temporal_upsample: int) -> ActionConfig:
    """Our ActionConfig for Matrix-Game's ``action_config``."""
    a = mg["action_config"]
    blocks = list(a.get("blocks", []))
    if not blocks or blocks != list(range(len(blocks))):
        raise ValueError(f"{source}: action_config blocks={blocks} are not the leading layers 0..N-1")
    if int(a.get("vae_time_compression_ratio", 4)) != temporal_upsample:
        raise ValueError(f"{source}: action_config vae_time_compression_ratio={a.get('vae_time_compression_ratio')} "
                         f"differs from the decoder's {temporal_upsample} frames per latent")
    if not a.get("qk_norm", True):
        raise ValueError(f"{source}: action_config qk_norm=false is not built (every release has true)")
    keys: tuple[str, ...] = ()
    if a.get("enable_keyboard", True):
        dim_in = int(a["keyboard_dim_in"])
        if dim_in not in KEYBOARDS:
            raise ValueError(f"{source}: action_config keyboard_dim_in={dim_in}: no known key vocabulary "
                             f"(known: {sorted(KEYBOARDS)}: universal, gta_drive, templerun)")
        keys = KEYBOARDS[dim_in]
    mouse: tuple[str, ...] = ()
    if a.get("enable_mouse", True):
        if int(a.get("mouse_dim_in", 2)) != len(MOUSE_AXES):
            raise ValueError(f"{source}: action_config mouse_dim_in={a.get('mouse_dim_in')}: expected {len(MOUSE_AXES)}")
        mouse = MOUSE_AXES
    return ActionConfig(
        keys=keys, mouse_axes=mouse, mouse_scale=MOUSE_SCALE, window_frames=int(a.get("windows_size", 3)),
        num_layers=len(blocks), module="matrix-game-2", hidden_size=int(a.get("hidden_size", 128)),
        mouse_hidden_dim=int(a.get("mouse_hidden_dim", 1024)), keyboard_hidden_dim=int(a.get("keyboard_hidden_dim", 1024)),
        heads=int(a.get("heads_num", 16)), rope_dims=tuple(a.get("mouse_qk_dim_list", a.get("rope_dim_list", (8, 28, 28)))),
        rope_theta=float(a.get("rope_theta", 256)), qkv_bias=bool(a.get("qkv_bias", False)))


def streaming_overrides(mg: Mapping[str, Any], config: ModelConfig, source: str) -> dict[str, Any]:
    """The release's own window and steps where they differ from the family's (GTA: window 4; templerun: 4 steps)."""
    out: dict[str, Any] = {}
    window, sink = int(mg.get("local_attn_size", -1)), int(mg.get("sink_size", 0))
    n = config.frames_per_block
    if window > 0 and (window, sink) != (config.window_frames, config.sink_frames):
        if (window - sink) % n or sink % n:
            log.warning("%s: local_attn_size %d / sink %d is not whole blocks of %d frames (this cache keeps whole "
                        "blocks); streaming with window %d, sink %d instead", source, window, sink, n,
                        config.window_frames, config.sink_frames)
        else:
            out.update(window_frames=window, sink_frames=sink)
    a = mg["action_config"]
    if int(a.get("keyboard_dim_in", 0)) == 7 and not a.get("enable_mouse", True):
        out["denoising_steps"] = TEMPLERUN_STEPS
    return out


def config_from_matrix_game(sd: Mapping[str, torch.Tensor], mg: Mapping[str, Any], *, base: ModelConfig | None = None,
                            overrides: Mapping[str, Any] | None = None, name: str | None = None,
                            source: str = "Matrix-Game 2.0") -> ModelConfig:
    """ModelConfig of a Matrix-Game 2.0 state dict (our names) and its ``config.json``."""
    overrides = dict(overrides or {})
    if mg.get("model_type", "i2v") != "i2v":
        raise ValueError(f"{source}: model_type={mg.get('model_type')!r}; Matrix-Game 2.0 is 'i2v'")
    dim, in_all, *patch = _need(sd, "patch_embedding.weight", source).shape  # [dim, 36, pt, ph, pw]
    clip_dim = _need(sd, "img_emb.proj.1.weight", source).shape[1]  # [clip, clip]
    head_out = _need(sd, "head.head.weight", source).shape[0]  # [Cout * pt * ph * pw, dim]
    out_channels = head_out // math.prod(patch)
    image = ImageConditioning(clip_dim=clip_dim)
    in_channels = in_all - image.mask_channels - out_channels
    if in_channels != out_channels:
        raise ValueError(f"{source}: patch_embedding reads {in_all} channels; expected {out_channels} noisy + "
                         f"{image.mask_channels} mask + {out_channels} image latent")
    layers = block_indices(sd.keys())
    if layers != list(range(len(layers))):
        raise KeyError(f"{source}: block indices {layers} are not 0..N-1; the checkpoint is incomplete")
    shapes = {
        "dim": dim, "num_heads": heads_for(dim, overrides.get("num_heads", mg.get("num_heads")), source),
        "in_channels": in_channels, "out_channels": out_channels, "patch": tuple(patch),
        "freq_dim": _need(sd, "time_embedding.0.weight", source).shape[1],  # [dim, freq_dim]
        "ffn_dim": _need(sd, "blocks.0.ffn.0.weight", source).shape[0],  # [ffn_dim, dim]
        "num_layers": len(layers), "qk_norm": "blocks.0.self_attn.norm_q.weight" in sd,
        "cross_attn_norm": "blocks.0.norm3.weight" in sd, "eps": float(mg.get("eps", 1e-6)),
        "image_conditioning": image, "takes_prompt": False,
    }
    for ours, theirs in (("dim", "dim"), ("ffn_dim", "ffn_dim"), ("num_layers", "num_layers")):
        if theirs in mg and int(mg[theirs]) != shapes[ours]:
            raise ValueError(f"{source}: config.json says {theirs}={mg[theirs]} but the weights have {ours}={shapes[ours]}")
    config = merge_config(shapes, base=base, name=name)
    actions = action_config(mg, source, config.temporal_upsample)
    config = config.with_(actions=actions, **streaming_overrides(mg, config, source))
    return config.with_(**overrides) if overrides else config
