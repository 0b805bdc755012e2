"""A Matrix-Game 2.0 release on disk with tiny random weights, in its real file and key layout.

The key names and shapes are written here from the release's module definitions (``CausalWanModel``:
Wan2.1's blocks with ``WanI2VCrossAttention`` and no ``text_embedding``, ``img_emb = MLPProj(clip, dim)``,
``blocks.N.action_model`` = its ``ActionModule`` in the ``action_config["blocks"]``), not from this
project's model, so loading them checks the mapping: every key consumed, none missing.

Layout (the Hugging Face release keeps the VAE at the top, each model in its own folder):

    Matrix-Game-2.0/Wan2.1_VAE.pth
    Matrix-Game-2.0/<model>/config.json                      (CausalWanModel, i2v, in_dim 36, action_config)
    Matrix-Game-2.0/<model>/diffusion_pytorch_model.safetensors   (or a distilled file, ``model.``-prefixed keys)
"""
from __future__ import annotations

from pathlib import Path

import torch

from streamgen.checkpoints.io import save_safetensors, write_json
from tests.checkpoints.wan_layouts import write_wan_vae_original

DIM, FFN, FREQ, HEADS, LAYERS, CLIP = 64, 128, 32, 4, 2, 160  # tiny trunk; CLIP tokens 160 wide (the release: 1280)
GRID = {"latent_height": 4, "latent_width": 4}  # 32 x 32 pixels (the release: 44 x 80, 352 x 640)

UNIVERSAL = {"blocks": [0], "enable_keyboard": True, "enable_mouse": True, "heads_num": 2, "hidden_size": 8,
             "img_hidden_size": DIM, "keyboard_dim_in": 4, "keyboard_hidden_dim": 32, "mouse_dim_in": 2,
             "mouse_hidden_dim": 32, "mouse_qk_dim_list": [8, 4, 4], "patch_size": [1, 2, 2], "qk_norm": True,
             "qkv_bias": False, "rope_dim_list": [8, 4, 4], "rope_theta": 256, "vae_time_compression_ratio": 4,
             "windows_size": 3}
# templerun: 7 keys, no mouse (its config has no mouse_* entries)
TEMPLERUN = {k: v for k, v in UNIVERSAL.items() if not k.startswith("mouse")} | {"enable_mouse": False, "keyboard_dim_in": 7}


def config_json(action: dict) -> dict:
    return {"_class_name": "CausalWanModel", "_diffusers_version": "0.35.0.dev0", "action_config": action, "dim": DIM,
            "eps": 1e-06, "ffn_dim": FFN, "freq_dim": FREQ, "in_dim": 36, "inject_sample_info": False,
            "local_attn_size": 6, "model_type": "i2v", "num_heads": HEADS, "num_layers": LAYERS, "out_dim": 16,
            "sink_size": 0, "text_len": 512}


def _linear(name: str, out: int, inp: int, bias: bool = True) -> dict[str, tuple[int, ...]]:
    return {f"{name}.weight": (out, inp), **({f"{name}.bias": (out,)} if bias else {})}


def _norm(name: str, dim: int, bias: bool = True) -> dict[str, tuple[int, ...]]:
    return {f"{name}.weight": (dim,), **({f"{name}.bias": (dim,)} if bias else {})}


def action_shapes(a: dict) -> dict[str, tuple[int, ...]]:
    """``ActionModule``'s parameters for one action_config."""
    rows = a["vae_time_compression_ratio"] * a["windows_size"]
    bias = a["qkv_bias"]
    out: dict[str, tuple[int, ...]] = {}
    if a["enable_keyboard"]:
        h, kh = a["hidden_size"], a["keyboard_hidden_dim"]
        out |= _linear("keyboard_embed.0", h, a["keyboard_dim_in"]) | _linear("keyboard_embed.2", h, h)
        out |= _norm("key_attn_q_norm", kh // a["heads_num"], False) | _norm("key_attn_k_norm", kh // a["heads_num"], False)
        out |= _linear("mouse_attn_q", kh, a["img_hidden_size"], bias) | _linear("keyboard_attn_kv", 2 * kh, h * rows, bias)
        out |= _linear("proj_keyboard", a["img_hidden_size"], kh, bias)
    if a["enable_mouse"]:
        mh = a["mouse_hidden_dim"]
        out |= _linear("mouse_mlp.0", mh, a["mouse_dim_in"] * rows + a["img_hidden_size"]) | _linear("mouse_mlp.2", mh, mh)
        out |= _norm("mouse_mlp.3", mh) | _linear("t_qkv", 3 * mh, mh, bias)
        out |= _norm("img_attn_q_norm", mh // a["heads_num"], False) | _norm("img_attn_k_norm", mh // a["heads_num"], False)
        out |= _linear("proj_mouse", a["img_hidden_size"], mh, bias)
    return out


def release_shapes(action: dict) -> dict[str, tuple[int, ...]]:
    """Every tensor of the released transformer, Matrix-Game's names."""
    out = {"patch_embedding.weight": (DIM, 36, 1, 2, 2), "patch_embedding.bias": (DIM,), "head.modulation": (1, 2, DIM)}
    out |= _linear("time_embedding.0", DIM, FREQ) | _linear("time_embedding.2", DIM, DIM) | _linear("time_projection.1", 6 * DIM, DIM)
    out |= _norm("img_emb.proj.0", CLIP) | _linear("img_emb.proj.1", CLIP, CLIP) | _linear("img_emb.proj.3", DIM, CLIP)
    out |= _norm("img_emb.proj.4", DIM) | _linear("head.head", 16 * 4, DIM)
    for i in range(LAYERS):
        b = f"blocks.{i}."
        for attn in ("self_attn", "cross_attn"):
            for p in "qkvo":
                out |= _linear(b + f"{attn}.{p}", DIM, DIM)
            out |= _norm(b + f"{attn}.norm_q", DIM, False) | _norm(b + f"{attn}.norm_k", DIM, False)
        out |= _norm(b + "norm3", DIM) | _linear(b + "ffn.0", FFN, DIM) | _linear(b + "ffn.2", DIM, FFN)
        out[b + "modulation"] = (1, 6, DIM)
        if i in action["blocks"]:
            out |= {b + "action_model." + k: s for k, s in action_shapes(action).items()}
    return out


def random_release(action: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in release_shapes(action).items():
        is_norm_weight = len(shape) == 1 and name.endswith(".weight")
        fan_in = shape[1] if len(shape) > 1 else 1
        sd[name] = (1 + 0.1 * torch.randn(shape, generator=g)) if is_norm_weight else torch.randn(shape, generator=g) * fan_in ** -0.5
    return sd


CLIP_FILE = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"


def clip_shapes(dim: int = CLIP, layers: int = 3, patch: int = 14, image: int = 56, out_dim: int = 64) -> dict:
    """Wan's CLIP file: ``visual.*`` (a ViT; ViT-H/14 is 1280 wide, 32 blocks, 224 px) and, unread here, the text
    tower and ``log_scale`` (two of its tensors stand for the whole XLM-RoBERTa)."""
    tokens = 1 + (image // patch) ** 2
    out = {"visual.patch_embedding.weight": (dim, 3, patch, patch), "visual.cls_embedding": (1, 1, dim),
           "visual.pos_embedding": (1, tokens, dim), "visual.head": (dim, out_dim)}
    out |= _norm("visual.pre_norm", dim) | _norm("visual.post_norm", dim)
    for i in range(layers):
        b = f"visual.transformer.{i}."
        out |= _norm(b + "norm1", dim) | _linear(b + "attn.to_qkv", 3 * dim, dim) | _linear(b + "attn.proj", dim, dim)
        out |= _norm(b + "norm2", dim) | _linear(b + "mlp.0", 4 * dim, dim) | _linear(b + "mlp.2", dim, 4 * dim)
    return out | {"textual.token_embedding.weight": (16, 8), "textual.head.0.weight": (8, 8), "log_scale": ()}


def write_wan_clip(path: Path, seed: int = 0, **shape) -> Path:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, s in clip_shapes(**shape).items():
        norm = len(s) == 1 and name.endswith(".weight")
        sd[name] = 1 + 0.1 * torch.randn(s, generator=g) if norm else torch.randn(s, generator=g) * (s[-1] if s else 1) ** -0.5
    torch.save(sd, path)
    return path


def write_matrix_game_release(root: Path, model: str = "base_distilled_model", *, action: dict = UNIVERSAL, seed: int = 0,
                              weights: str = "diffusion_pytorch_model.safetensors", prefixed: bool = False,
                              vae: bool = True, clip: bool = False) -> Path:
    """``root/Wan2.1_VAE.pth`` (and with ``clip`` Wan's CLIP file) and ``root/model/`` (config.json + weights);
    returns the model folder."""
    folder = root / model
    folder.mkdir(parents=True, exist_ok=True)
    if vae and not (root / "Wan2.1_VAE.pth").is_file():
        write_wan_vae_original(root / "Wan2.1_VAE.pth")
    if clip:
        write_wan_clip(root / CLIP_FILE)
    write_json(folder / "config.json", config_json(action))
    sd = random_release(action, seed)
    save_safetensors({("model." + k if prefixed else k): v for k, v in sd.items()}, folder / weights)
    write_json(folder / "streamgen.json", {"overrides": GRID})  # the tiny grid; the release streams at 44 x 80
    return folder
