"""Whole Wan-family model folders on disk, tiny random weights in each release's real file and key layout.

- :func:`write_wan_original` -> ``Wan2.1-T2V-*``: ``config.json`` (WanModel), ``diffusion_pytorch_model.safetensors``,
  ``Wan2.1_VAE.pth``, ``models_t5_umt5-xxl-enc-bf16.pth`` + ``google/umt5-xxl/``
- :func:`write_diffusers` -> a diffusers pipeline: ``model_index.json``, ``transformer/``, ``vae/``, ``text_encoder/``, ``tokenizer/``
- :func:`write_self_forcing` -> ``self_forcing_dmd.pt`` (``generator`` / ``generator_ema`` of ``model.``-prefixed keys)
- :func:`write_longlive` -> ``longlive_base.pt`` + ``lora.pt`` (``{"generator_lora": peft state dict}``)
- Matrix-Game 2.0: ``tests/checkpoints/mg2_layout.py``

The transformer has the tiny widths (64 wide, 4 heads of 16, 2 layers) with Wan's 16 latent channels and
umT5's width of the tiny text encoder, so the components of ``tests/checkpoints/wan_layouts.py`` fit it.
"""
from __future__ import annotations

from pathlib import Path

import torch

from streamgen.checkpoints.io import save_safetensors, write_json
from streamgen.checkpoints.wan_diffusers import diffusers_config_from, ours_to_diffusers
from streamgen.checkpoints.wan_original import wan_config_from
from streamgen.config import ModelConfig
from streamgen.models.dit import CausalDiT
from tests.checkpoints.reference import randomise
from tests.checkpoints.wan_layouts import (TINY_UMT5, write_taew, write_umt5_diffusers, write_umt5_original,
                                           write_wan_vae_diffusers, write_wan_vae_original)

# A 4 x 4 latent grid (32 x 32 pixels): the layouts are the point, not the picture.
GRID = {"latent_height": 4, "latent_width": 4}
TEXT_LEN = 8


def tiny_config(**changes) -> ModelConfig:
    return ModelConfig(name="tiny-wan", in_channels=16, out_channels=16, dim=64, ffn_dim=128, num_heads=4, num_layers=2,
                       freq_dim=32, text_dim=TINY_UMT5["d_model"], text_len=TEXT_LEN, **GRID, **changes)


def tiny_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Our (= Wan2.1) names, every parameter random (the zero-initialised head too)."""
    model = CausalDiT(tiny_config())
    randomise(model, seed)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _spec(folder: Path, **spec) -> None:
    write_json(folder / "streamgen.json", spec)


def write_wan_original(folder: Path, seed: int = 0, *, vae: bool = True, t5: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "config.json", {**wan_config_from(tiny_config()), "text_len": TEXT_LEN})
    save_safetensors(tiny_state_dict(seed), folder / "diffusion_pytorch_model.safetensors")
    if vae:
        write_wan_vae_original(folder / "Wan2.1_VAE.pth")
    if t5:
        write_umt5_original(folder / "models_t5_umt5-xxl-enc-bf16.pth")
    _spec(folder, overrides=GRID)
    return folder


def write_diffusers(folder: Path, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "model_index.json", {"_class_name": "WanPipeline", "transformer": ["diffusers", "WanTransformer3DModel"],
                                             "vae": ["diffusers", "AutoencoderKLWan"], "text_encoder": ["transformers", "UMT5EncoderModel"],
                                             "tokenizer": ["transformers", "T5TokenizerFast"]})
    (folder / "transformer").mkdir()
    config = diffusers_config_from(tiny_config())
    write_json(folder / "transformer" / "config.json",
               {"_class_name": "WanTransformer3DModel", **{k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}})
    save_safetensors(ours_to_diffusers(tiny_state_dict(seed)), folder / "transformer" / "diffusion_pytorch_model.safetensors")
    write_wan_vae_diffusers(folder / "vae")
    write_umt5_diffusers(folder)
    _spec(folder, overrides={**GRID, "text_len": TEXT_LEN})
    return folder


def _generator(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"model." + k: v for k, v in sd.items()}


def write_self_forcing(folder: Path, base: Path, seed: int = 0) -> Path:
    """Self-Forcing's release: ``checkpoints/self_forcing_dmd.pt`` with both generators; the EMA one is used."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"generator": _generator(tiny_state_dict(seed + 1)), "generator_ema": _generator(tiny_state_dict(seed))},
               folder / "self_forcing_dmd.pt")
    _spec(folder, base=str(base), overrides={**GRID, "text_len": TEXT_LEN})
    return folder


LORA_TARGETS = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q", "cross_attn.k",
                "cross_attn.v", "cross_attn.o", "ffn.0", "ffn.2")


def lora_state_dict(sd: dict[str, torch.Tensor], rank: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """peft's state dict of LongLive's LoRA on every linear of every block (lora_B non-zero, as after training)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    layers = sorted({int(k.split(".")[1]) for k in sd if k.startswith("blocks.")})
    for i in layers:
        for target in LORA_TARGETS:
            w = sd[f"blocks.{i}.{target}.weight"]  # [out, in]
            out[f"base_model.model.blocks.{i}.{target}.lora_A.weight"] = torch.randn(rank, w.shape[1], generator=g) * w.shape[1] ** -0.5
            out[f"base_model.model.blocks.{i}.{target}.lora_B.weight"] = torch.randn(w.shape[0], rank, generator=g) * 0.1
    return out


def write_longlive(folder: Path, base: Path, seed: int = 0, rank: int = 4, alpha: float | None = None) -> Path:
    """LongLive's release: ``longlive_base.pt`` (``generator``) and ``lora.pt`` (``generator_lora``)."""
    folder.mkdir(parents=True, exist_ok=True)
    sd = tiny_state_dict(seed)
    torch.save({"generator": _generator(sd)}, folder / "longlive_base.pt")
    torch.save({"generator_lora": lora_state_dict(sd, rank, seed)}, folder / "lora.pt")
    spec = {"base": str(base), "overrides": {**GRID, "text_len": TEXT_LEN}}
    if alpha is not None:
        spec["lora_alpha"] = alpha
    _spec(folder, **spec)
    return folder


def write_taew_beside(folder: Path) -> Path:
    return write_taew(folder / "taew2_1.pth")
