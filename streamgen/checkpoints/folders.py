"""``load_checkpoint_dir``: one entry point for every supported folder or file of weights.

Accepted:
- our format: ``model.safetensors`` + ``config.json`` (``"format": "streamgen"``);
- a diffusers transformer folder: ``config.json`` (``WanTransformer3DModel``) +
  ``diffusion_pytorch_model.safetensors`` or shards with ``diffusion_pytorch_model.safetensors.index.json``;
  a whole diffusers pipeline folder (``model_index.json`` + ``transformer/``) is entered at ``transformer/``;
- a Wan2.1 original folder: ``config.json`` (``WanModel``) + the same weight file names;
- a Self-Forcing / LongLive checkpoint: a ``.pt`` / ``.safetensors`` file (or a folder holding exactly
  one) with ``generator`` / ``generator_ema`` entries or ``model.``-prefixed keys.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Mapping

import torch

from streamgen.config import ModelConfig
from streamgen.families import FAMILIES
from streamgen.checkpoints import io
from streamgen.checkpoints.adapters import build_model, load_state_dict_any
from streamgen.checkpoints.components import generator_file, read_spec
from streamgen.checkpoints.family_detect import detect_family, family_base
from streamgen.checkpoints.matrix_game import config_from_matrix_game, is_matrix_game_config, to_ours
from streamgen.checkpoints.wan_diffusers import config_from_diffusers
from streamgen.checkpoints.wan_original import config_from_wan_state_dict
from streamgen.models.dit import CausalDiT

DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
DIFFUSERS_INDEX = DIFFUSERS_WEIGHTS + ".index.json"
TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
EXPECTED = (
    f"a folder with {io.WEIGHTS_NAME} + {io.CONFIG_NAME} (streamgen), {io.CONFIG_NAME} + {DIFFUSERS_WEIGHTS} "
    f"or {DIFFUSERS_INDEX} (diffusers / Wan2.1), or a .pt / .safetensors file (Self-Forcing / LongLive)"
)


def load_weights_file(path: Path, device: torch.device | str = "cpu") -> Mapping[str, Any]:
    """A whole weights file as a dict: safetensors, or a torch pickle read with ``weights_only=True``."""
    if not path.is_file():
        raise FileNotFoundError(f"expected a weights file at {path}, found none")
    if path.suffix == ".safetensors":
        return io.load_safetensors(path, device)
    if path.suffix not in TORCH_SUFFIXES:
        raise ValueError(f"{path}: unknown weights suffix {path.suffix!r}; expected .safetensors or {TORCH_SUFFIXES}")
    try:
        try:
            return torch.load(path, map_location=device, weights_only=True, mmap=True)
        except RuntimeError as err:  # legacy (non-zip) files cannot be memory-mapped
            if "mmap" not in str(err):
                raise
            return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path} holds objects other than tensors and plain containers, so it is not loaded (unpickling "
            f"could run code). Re-save its state dict with safetensors. Detail: {err}"
        ) from None


def _load_sharded(folder: Path, index_path: Path, device) -> dict[str, torch.Tensor]:
    index = io.read_json(index_path)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(f"{index_path} has no 'weight_map' of tensor name -> shard file")
    shards = sorted(set(weight_map.values()))
    absent = [s for s in shards if not (folder / s).is_file()]
    if absent:
        raise FileNotFoundError(f"{index_path} lists shards missing from {folder}: {absent}")
    sd: dict[str, torch.Tensor] = {}
    for shard in shards:
        sd.update(io.load_safetensors(folder / shard, device))
    missing = sorted(set(weight_map) - set(sd))
    if missing:
        raise KeyError(f"{index_path} names tensors absent from its shards: {missing[:8]}")
    return sd


def _diffusers_style_weights(folder: Path, device) -> dict[str, torch.Tensor]:
    if (folder / DIFFUSERS_INDEX).is_file():
        return _load_sharded(folder, folder / DIFFUSERS_INDEX, device)
    if (folder / DIFFUSERS_WEIGHTS).is_file():
        return io.load_safetensors(folder / DIFFUSERS_WEIGHTS, device)
    raise FileNotFoundError(f"{folder} has {io.CONFIG_NAME} but neither {DIFFUSERS_WEIGHTS} nor {DIFFUSERS_INDEX}")


def _matrix_game_weights(folder: Path, device) -> Mapping[str, Any]:
    """A Matrix-Game folder's transformer: diffusers-style files, else its one weights file (e.g. base_distill.safetensors)."""
    if (folder / DIFFUSERS_INDEX).is_file() or (folder / DIFFUSERS_WEIGHTS).is_file():
        return _diffusers_style_weights(folder, device)
    return load_weights_file(generator_file(folder, read_spec(folder)), device)


def _from_weights(sd: Mapping[str, Any], name: str, source: str, *, ema: bool, base, overrides) -> tuple[ModelConfig, dict]:
    layout, ours = load_state_dict_any(sd, ema=ema)
    if any(".action_model." in k for k in ours):
        raise ValueError(f"{source}: Matrix-Game 2.0 weights need the config.json (action_config) of their release "
                         "beside them; give the folder, with its config.json")
    if layout == "diffusers":
        raise ValueError(f"{source}: diffusers-named weights need the {io.CONFIG_NAME} of their folder")
    config = config_from_wan_state_dict(ours, base=base, overrides=overrides, name=name)
    return config, ours


def load_checkpoint_dir(
    path: str | Path,
    device: torch.device | str = "cpu",
    *,
    dtype: torch.dtype | None = None,
    overrides: Mapping[str, Any] | None = None,
    base: ModelConfig | None = None,
    ema: bool | None = None,
    family: str | None = None,
) -> tuple[ModelConfig, CausalDiT]:
    """Read a checkpoint folder (or a single weights file) and return ``(config, model)`` on ``device``.

    Shape fields come from the checkpoint; the rest of the config (latent grid, streaming window,
    sampler) from our ``config.json`` when the folder is ours, else from ``base`` (default: the
    ``wan2.1-1.3b`` preset) with the streaming settings of the checkpoint's ``family`` (None: detected,
    ``streamgen.checkpoints.family_detect``); ``overrides`` go on top. ``ema`` picks ``generator_ema`` over
    ``generator`` in Self-Forcing / LongLive files (None: as the family's inference does). ``dtype``
    casts the weights (None keeps theirs).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint path {path} does not exist; expected {EXPECTED}")
    if (path / "model_index.json").is_file() and (path / "transformer").is_dir():
        return load_checkpoint_dir(path / "transformer", device, dtype=dtype, overrides=overrides, base=base, ema=ema,
                                   family=family)
    why = "given"
    if family is None:
        family, why = detect_family(path)
    if family is not None:
        base = family_base(base, family, why, str(path))
        ema = FAMILIES[family].ema if ema is None else ema
    ema = True if ema is None else ema
    if path.is_file():
        config, ours = _from_weights(load_weights_file(path, device), path.stem, str(path), ema=ema, base=base, overrides=overrides)
        return config, build_model(config, ours, device=device, dtype=dtype, source=str(path))

    config_path = path / io.CONFIG_NAME
    if not config_path.is_file():
        weights = generator_file(path, read_spec(path))
        sd = load_weights_file(weights, device)
        config, ours = _from_weights(sd, path.name, str(weights), ema=ema, base=base, overrides=overrides)
        return config, build_model(config, ours, device=device, dtype=dtype, source=str(weights))

    data = io.read_json(config_path)
    if io.is_own_config(data):
        config = io.own_config(data, str(config_path), overrides)
        sd = io.load_safetensors(path / io.WEIGHTS_NAME, device)
        layout, ours = load_state_dict_any(sd, ema=ema)
    elif is_matrix_game_config(data):
        weights = _matrix_game_weights(path, device)
        layout, ours = load_state_dict_any(weights, ema=ema)
        ours = to_ours(ours)
        config = config_from_matrix_game(ours, data, base=base, overrides=overrides, name=path.name, source=str(path))
    elif isinstance(data, dict) and (data.get("_class_name") == "WanTransformer3DModel" or "num_attention_heads" in data):
        config = config_from_diffusers(data, base=base, overrides=overrides, name=path.name)
        layout, ours = load_state_dict_any(_diffusers_style_weights(path, device), ema=ema)
    elif isinstance(data, dict) and (data.get("_class_name") == "WanModel" or {"dim", "num_heads"} <= set(data)):
        layout, ours = load_state_dict_any(_diffusers_style_weights(path, device), ema=ema)
        config = config_from_wan_state_dict(ours, wan_config=data, base=base, overrides=overrides, name=path.name)
    else:
        keys = sorted(data)[:12] if isinstance(data, dict) else type(data).__name__
        raise ValueError(
            f"{config_path} is neither a streamgen config ('format': 'streamgen'), a diffusers "
            f"WanTransformer3DModel config nor a Wan2.1 WanModel config; its keys: {keys}"
        )
    return config, build_model(config, ours, device=device, dtype=dtype, source=str(path))
