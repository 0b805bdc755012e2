"""Names of umT5's encoder weights in Wan's original ``models_t5_umt5-xxl-enc-bf16.pth`` and in
transformers' ``UMT5EncoderModel``, and the model config read from the original weights' shapes.

The original (``wan/modules/t5.py``, ``T5Encoder`` with a relative position embedding per block):
``token_embedding``, ``blocks.N.{norm1, attn.{q,k,v,o}, norm2, ffn.gate.0, ffn.fc1, ffn.fc2,
pos_embedding.embedding}``, ``norm``. Its feed-forward is ``fc2(fc1(x) * gelu(gate(x)))``, which is
transformers' gated-GELU ``wo(gelu(wi_0(x)) * wi_1(x))``.
"""
from __future__ import annotations

import re

# Per block: original suffix -> transformers suffix (under ``encoder.block.N.``).
BLOCK = {
    "norm1.weight": "layer.0.layer_norm.weight",
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}
TOP = {"token_embedding.weight": "shared.weight", "norm.weight": "encoder.final_layer_norm.weight"}
# transformers keeps the token embedding twice (``shared`` and the encoder's tied copy).
TIED = "encoder.embed_tokens.weight"


def original_to_hf_name(name: str) -> str:
    if name in TOP:
        return TOP[name]
    m = re.match(r"blocks\.(\d+)\.(.+)", name)
    if m and m.group(2) in BLOCK:
        return f"encoder.block.{m.group(1)}.{BLOCK[m.group(2)]}"
    raise ValueError(f"umT5: {name!r} is not a weight of Wan's umT5 encoder")


def hf_to_original_name(name: str) -> str:
    """The inverse of :func:`original_to_hf_name` (the tied ``encoder.embed_tokens`` maps to the embedding)."""
    if name == TIED:
        return "token_embedding.weight"
    for orig, hf in TOP.items():
        if hf == name:
            return orig
    m = re.match(r"encoder\.block\.(\d+)\.(.+)", name)
    if m:
        for orig, hf in BLOCK.items():
            if hf == m.group(2):
                return f"blocks.{m.group(1)}.{orig}"
    raise ValueError(f"umT5: no original name known for transformers weight {name!r}")


def config_from_original(sd: dict) -> dict:
    """``UMT5Config`` fields from the original weights' shapes (umT5-xxl: vocab 256384, d_model 4096,
    64 heads of 64, d_ff 10240, 24 layers, 32 buckets)."""
    if "token_embedding.weight" not in sd or "blocks.0.pos_embedding.embedding.weight" not in sd:
        raise ValueError("umT5: the state dict has no token_embedding / blocks.0.pos_embedding: not Wan's umT5 encoder")
    vocab, d_model = sd["token_embedding.weight"].shape  # [vocab, d_model]
    buckets, heads = sd["blocks.0.pos_embedding.embedding.weight"].shape  # [num_buckets, num_heads]
    dim_attn = sd["blocks.0.attn.q.weight"].shape[0]  # [heads * d_kv, d_model]
    layers = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k)))
    return dict(vocab_size=int(vocab), d_model=int(d_model), d_kv=int(dim_attn) // int(heads),
                d_ff=int(sd["blocks.0.ffn.fc1.weight"].shape[0]), num_layers=layers, num_heads=int(heads),
                relative_attention_num_buckets=int(buckets), relative_attention_max_distance=128,  # Wan's max_dist
                feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6, is_encoder_decoder=False,
                tie_word_embeddings=False)
