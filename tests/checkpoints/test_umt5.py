"""umT5 (Wan's text encoder): this project's encoder against a direct ``UMT5EncoderModel`` call, Wan's
original .pth layout loaded key for key, the per-prompt cache, offloading and the one-line errors."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer, UMT5EncoderModel

from streamgen.text import clean_prompt, load_umt5
from tests.checkpoints.wan_layouts import TINY_UMT5, write_tokenizer, write_umt5_diffusers, write_umt5_original

TEXT_LEN = 64
PROMPTS = ["a cat walks along the beach at sunset", "  waves   roll over\tdark rocks &amp; snow "]

# Per-block names of Wan2.1's wan/modules/t5.py (T5SelfAttention: norm1, attn.{q,k,v,o}, norm2,
# ffn.{gate.0, fc1, fc2}, pos_embedding.embedding with shared_pos=False as umt5_xxl sets it) and the
# encoder's token_embedding / norm.
WAN_BLOCK_NAMES = ["norm1.weight", "attn.q.weight", "attn.k.weight", "attn.v.weight", "attn.o.weight", "norm2.weight",
                   "ffn.gate.0.weight", "ffn.fc1.weight", "ffn.fc2.weight", "pos_embedding.embedding.weight"]


def direct(model: UMT5EncoderModel, tokenizer, prompt: str) -> torch.Tensor:
    """transformers' encoder called directly, padding rows zeroed."""
    tok = tokenizer([clean_prompt(prompt)], padding="max_length", max_length=TEXT_LEN, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(input_ids=tok.input_ids, attention_mask=tok.attention_mask).last_hidden_state
    return hidden * tok.attention_mask[..., None]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("umt5")
    te = write_umt5_diffusers(root / "pipe", seed=7)
    pth = write_umt5_original(root / "wan" / "models_t5_umt5-xxl-enc-bf16.pth", seed=7)
    return te, pth


def test_encoder_equals_direct_umt5_call(folders):
    te, _ = folders
    enc = load_umt5(te, text_len=TEXT_LEN)
    model = UMT5EncoderModel.from_pretrained(te, local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(te.parent / "tokenizer", local_files_only=True)
    for prompt in PROMPTS:
        ours, ref = enc(prompt), direct(model, tok, prompt)
        assert ours.shape == (1, TEXT_LEN, TINY_UMT5["d_model"])
        assert (ours - ref).abs().max().item() <= 1e-5
        n = len(tok(clean_prompt(prompt)).input_ids)  # the prompt's tokens and </s>
        assert 2 < n < TEXT_LEN
        assert ours[0, :n].abs().amax(dim=-1).min() > 0 and not ours[0, n:].any()  # Wan's zeroed padding rows


def test_original_pth_loads_every_key_with_wans_names(folders):
    _, pth = folders
    sd = torch.load(pth, weights_only=True)
    layers = TINY_UMT5["num_layers"]
    wan_names = {"token_embedding.weight", "norm.weight"} | {f"blocks.{i}.{n}" for i in range(layers) for n in WAN_BLOCK_NAMES}
    assert set(sd) == wan_names and all(v.dtype == torch.bfloat16 for v in sd.values())
    enc = load_umt5(pth, text_len=TEXT_LEN)  # strict: raises on any missing or unexpected key
    # The same weights through transformers directly (rounded to bf16 as the file stores them).
    te = folders[0]
    model = UMT5EncoderModel.from_pretrained(te, local_files_only=True).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    tok = AutoTokenizer.from_pretrained(pth.parent / "google" / "umt5-xxl", local_files_only=True)
    for prompt in PROMPTS:
        assert (enc(prompt) - direct(model, tok, prompt)).abs().max().item() <= 1e-5
    # Shapes give the config: 2 layers, 4 heads of 4, d_ff 32, 32 buckets.
    cfg = enc.model.config
    assert (cfg.num_layers, cfg.num_heads, cfg.d_kv, cfg.d_ff, cfg.relative_attention_num_buckets) == (
        layers, TINY_UMT5["num_heads"], TINY_UMT5["d_kv"], TINY_UMT5["d_ff"], TINY_UMT5["relative_attention_num_buckets"])


def test_prompt_cache_is_lru_and_offload_keeps_the_model_on_cpu(folders):
    te, _ = folders
    enc = load_umt5(te, text_len=TEXT_LEN, offload=True)
    enc.cache_size = 2
    a = enc("a dog runs")
    assert enc("a  dog runs ") is a  # the cleaned prompt is the key
    enc("a red car")
    enc("a dog runs")  # refreshed: now the most recent
    enc("waves roll")  # evicts "a red car"
    assert enc.cached_prompts == ["a dog runs", "waves roll"]
    huge = enc("a cat " * 100_000)  # a network prompt of any size: cut before tokenizing, same embedding
    assert torch.equal(huge, enc.encode("a cat " * 2_000)) and len(enc.cached_prompts[-1]) == 16 * TEXT_LEN
    assert all(p.device.type == "cpu" for p in enc.model.parameters())


def test_missing_parts_name_the_file_in_one_line(folders, tmp_path):
    te, pth = folders
    with pytest.raises(FileNotFoundError) as err:
        load_umt5(tmp_path / "text_encoder")
    assert str(tmp_path / "text_encoder") in str(err.value) and "\n" not in str(err.value)
    alone = tmp_path / "alone.pth"
    alone.write_bytes(pth.read_bytes())  # no google/umt5-xxl tokenizer beside it
    with pytest.raises(FileNotFoundError, match=r"tokenizer.*google/umt5-xxl.*beside the \.pth"):
        load_umt5(alone)
    assert load_umt5(alone, tokenizer=write_tokenizer(tmp_path / "tok"), text_len=TEXT_LEN)("a cat").shape == (1, TEXT_LEN, 16)
    sd = torch.load(pth, weights_only=True)
    sd["blocks.0.attn.extra.weight"] = torch.zeros(1)
    del sd["blocks.1.ffn.fc2.weight"]
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"missing \['encoder.block.1.layer.1.DenseReluDense.wo.weight'\], "
                                         r"unexpected \['blocks.0.attn.extra.weight'\]"):
        load_umt5(tmp_path / "bad.pth", tokenizer=tmp_path / "tok")
