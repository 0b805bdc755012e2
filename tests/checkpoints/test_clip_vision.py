"""Wan's CLIP vision tower (``streamgen.image_clip``) read from its original file equals transformers'
``CLIPVisionModel`` with the same weights at the next-to-last block (Wan's ``use_31_block``), and a Matrix-Game
2.0 release with the CLIP file at its top conditions its streams on real CLIP tokens of the start image."""
import numpy as np
import torch

import streamgen
from streamgen.image_clip import load_clip_vision
from tests.checkpoints.mg2_layout import write_matrix_game_release, write_wan_clip


def _transformers_clip(sd: dict, dim: int, layers: int, patch: int, image: int):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    cfg = CLIPVisionConfig(hidden_size=dim, intermediate_size=4 * dim, num_hidden_layers=layers, num_attention_heads=dim // 80,
                           image_size=image, patch_size=patch, hidden_act="gelu", layer_norm_eps=1e-5)
    model = CLIPVisionModel(cfg).eval()
    v = {k.removeprefix("visual."): t for k, t in sd.items() if k.startswith("visual.")}
    theirs = {"vision_model.embeddings.patch_embedding.weight": v["patch_embedding.weight"],
              "vision_model.embeddings.class_embedding": v["cls_embedding"].reshape(dim),
              "vision_model.embeddings.position_embedding.weight": v["pos_embedding"][0]}
    for ours, hf in (("pre_norm", "pre_layrnorm"), ("post_norm", "post_layernorm")):
        theirs |= {f"vision_model.{hf}.{p}": v[f"{ours}.{p}"] for p in ("weight", "bias")}
    for i in range(layers):
        b, h = f"transformer.{i}.", f"vision_model.encoder.layers.{i}."
        for p in ("weight", "bias"):
            q, k, val = v[b + f"attn.to_qkv.{p}"].chunk(3)
            theirs |= {h + f"self_attn.q_proj.{p}": q, h + f"self_attn.k_proj.{p}": k, h + f"self_attn.v_proj.{p}": val,
                       h + f"self_attn.out_proj.{p}": v[b + f"attn.proj.{p}"], h + f"layer_norm1.{p}": v[b + f"norm1.{p}"],
                       h + f"layer_norm2.{p}": v[b + f"norm2.{p}"], h + f"mlp.fc1.{p}": v[b + f"mlp.0.{p}"],
                       h + f"mlp.fc2.{p}": v[b + f"mlp.2.{p}"]}
    if not any(k.startswith("vision_model.") for k in model.state_dict()):  # newer transformers: no prefix
        theirs = {k.removeprefix("vision_model."): t for k, t in theirs.items()}
    missing, unexpected = model.load_state_dict(theirs, strict=False)
    assert not unexpected and all("position_ids" in m for m in missing), (missing, unexpected)
    return model


def test_clip_tokens_equal_transformers_at_the_next_to_last_block(tmp_path):
    path = write_wan_clip(tmp_path / "clip.pth", dim=160, layers=3, patch=14, image=56)
    ours = load_clip_vision(path)
    sd = torch.load(path, weights_only=True)
    ref = _transformers_clip(sd, 160, 3, 14, 56)
    pixels = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        got = ours(pixels)
        want = ref(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
    assert got.shape == (2, 17, 160)
    assert (got - want).abs().max() <= 1e-5 * max(1.0, want.abs().max().item())


def test_a_release_with_its_clip_file_streams_from_real_clip_tokens(tmp_path):
    folder = write_matrix_game_release(tmp_path / "Matrix-Game-2.0", clip=True)
    pipe = streamgen.load_pipeline(str(folder), device="cpu")
    assert pipe.describe()["image_encoder"]["kind"] == "clip"
    dark, light = np.zeros((40, 40, 3), np.uint8), np.full((40, 40, 3), 230, np.uint8)
    a, b = pipe.start(image=dark), pipe.start(image=light)
    assert a.conditioning.notes["image_embeds"].startswith("CLIP")
    assert not torch.equal(a.text_kv[0][0], b.text_kv[0][0])  # the image's tokens are the cross-attention context
    assert a.step().video.shape == (9, 32, 32, 3)
