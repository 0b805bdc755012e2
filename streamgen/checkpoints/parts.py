"""Loading every part of a Wan-family model folder: transformer (+ LongLive LoRA), video decoder, umT5.

``load_parts`` turns :class:`~streamgen.checkpoints.components.Components` into loaded modules; the
pipeline assembles them. The Wan VAE, the tiny decoder and umT5 live in ``streamgen.decoders`` /
``streamgen.text`` and are imported only when a folder has them.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from streamgen.checkpoints.components import SPEC_NAME, Components
from streamgen.checkpoints.folders import load_checkpoint_dir, load_weights_file
from streamgen.checkpoints.lora import merge_lora
from streamgen.checkpoints.shapes import WAN_HEADS
from streamgen.config import ModelConfig
from streamgen.models.dit import CausalDiT

log = logging.getLogger("streamgen.checkpoints")
DECODERS = ("vae", "tiny", "preview")


@dataclass
class Parts:
    config: ModelConfig
    model: CausalDiT
    decoder: Any | None  # None: the pipeline's preview decoder
    text_encoder: Any | None  # None: the hash text encoder
    notes: dict[str, Any] = field(default_factory=dict)  # what was loaded from where (describe())
    image_encoder: Any | None = None  # CLIP vision tower of image-conditioned models (None: embeddings or a stand-in)


def _choose_decoder(comps: Components, wanted: str | None) -> str:
    wanted = wanted or comps.spec.get("decoder")
    if wanted is not None and wanted not in DECODERS:
        raise ValueError(f"decoder={wanted!r}: choose one of {DECODERS}")
    if wanted == "vae" and comps.vae is None:
        where = comps.base or comps.transformer
        raise FileNotFoundError(f"decoder='vae' but {where} has no Wan VAE (Wan2.1_VAE.pth or vae/); give a base folder "
                                "with --base or \"base\" in streamgen.json")
    if wanted == "tiny" and comps.tiny_decoder is None:
        raise FileNotFoundError(f"decoder='tiny' but no taew2_1.pth was found beside {comps.transformer} or in the base "
                                f"folder {comps.base} (or named as \"tiny_decoder\" in {SPEC_NAME})")
    if wanted is not None:
        return wanted
    return "vae" if comps.vae is not None else "tiny" if comps.tiny_decoder is not None else "preview"


def load_parts(comps: Components, device: torch.device, dtype: torch.dtype, overrides: Mapping[str, Any] | None = None,
               *, decoder: str | None = None, offload_text_encoder: bool = False) -> Parts:
    """Transformer (LoRA merged), the chosen video decoder and umT5 of ``comps`` on ``device``."""
    spec = comps.spec
    over = dict(spec.get("overrides") or {})
    heads = spec.get("num_heads")
    if heads is None and comps.base_dim not in WAN_HEADS:
        # A base of a width no released Wan2.1 has (a custom or test model): its head count. A released base
        # (1.3B or 14B) says nothing about the student's width: a 14B student may use the 1.3B base's VAE and
        # umT5, and the released widths give the heads (checkpoints/shapes.py).
        heads = comps.num_heads
    if heads is not None and comps.kind == "student":
        over.setdefault("num_heads", int(heads))
    over.update(overrides or {})
    config, model = load_checkpoint_dir(comps.transformer, device, overrides=over, ema=spec.get("ema"))
    notes: dict[str, Any] = {"layout": comps.kind, "base": str(comps.base) if comps.base else None}
    if comps.lora is not None:
        merged = merge_lora(model, load_weights_file(comps.lora, "cpu"), alpha=spec.get("lora_alpha"), source=str(comps.lora))
        notes["lora"] = {"file": str(comps.lora), "merged_modules": len(merged)}
        log.info("%s: LoRA merged into %d linear layers", comps.lora, len(merged))
    model = model.to(device=device, dtype=dtype).eval()
    choice = _choose_decoder(comps, decoder)
    video = None
    if choice == "vae":
        from streamgen.decoders.wan_vae import load_wan_vae

        video = load_wan_vae(comps.vae, device, dtype)
        notes["decoder"] = {"kind": "wan-vae", "file": str(comps.vae)}
    elif choice == "tiny":
        from streamgen.decoders.tiny_wan import load_tiny_wan

        video = load_tiny_wan(comps.tiny_decoder, device, dtype)
        notes["decoder"] = {"kind": "tiny-wan", "file": str(comps.tiny_decoder)}
    else:
        notes["decoder"] = {"kind": "preview", "why": "no Wan VAE or tiny decoder in the folder (no base given)"}
    text = None
    if comps.text_encoder is not None:
        from streamgen.text import load_umt5

        text = load_umt5(comps.text_encoder, tokenizer=comps.tokenizer, device=device, dtype=dtype,
                         text_len=config.text_len, offload=offload_text_encoder)
        notes["text_encoder"] = {"kind": "umt5", "file": str(comps.text_encoder)}
    elif comps.kind == "matrix_game":
        notes["text_encoder"] = {"kind": "none", "why": "Matrix-Game 2.0 has no text: the start image is its context"}
    else:
        notes["text_encoder"] = {"kind": "hash", "why": "no umT5 in the folder (no base given)"}
    clip = None
    if comps.image_encoder is not None:
        from streamgen.image_clip import load_clip_vision

        clip = load_clip_vision(comps.image_encoder, device, dtype)
        notes["image_encoder"] = {"kind": "clip", "file": str(comps.image_encoder)}
    elif comps.kind == "matrix_game":
        notes["image_encoder"] = {"kind": "stand-in", "why": "no CLIP file found; give --image-embeds for real tokens"}
    return Parts(config, model, video, text, notes, clip)
