"""LongLive's LoRA merged at load equals the LoRA forward (peft's ``W x + b + (alpha / r) B A x``)."""
import pytest
import torch

import streamgen
from streamgen.checkpoints.lora import lora_pairs, merge_lora
from streamgen.models.dit import CausalDiT
from tests.checkpoints.folder_layouts import GRID, lora_state_dict, tiny_config, tiny_state_dict, write_longlive

TOL = 1e-5


def _inputs(config, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 3, config.in_channels, config.latent_height, config.latent_width, generator=g)
    text = torch.randn(1, config.text_len, config.text_dim, generator=g)
    return x, torch.tensor([[900.0, 500.0, 100.0]]), text


def _model(sd):
    model = CausalDiT(tiny_config())
    model.load_state_dict(sd)
    return model.eval()


def _lora_forward(model, pairs, scale):
    """The unmerged LoRA forward: hooks add ``scale * B (A x)`` to each targeted linear's output."""
    modules = dict(model.named_modules())
    hooks = []
    for path, (a, b) in pairs.items():
        hooks.append(modules[path].register_forward_hook(
            lambda m, args, out, a=a, b=b: out + scale * (args[0] @ a.T) @ b.T))
    return hooks


@pytest.mark.parametrize("alpha", [None, 8.0])
@torch.no_grad()
def test_merged_lora_equals_the_lora_forward(alpha):
    sd, rank = tiny_state_dict(0), 4
    lora = {"generator_lora": lora_state_dict(sd, rank=rank, seed=1)}
    x, t, text = _inputs(tiny_config())
    plain = _model(sd)
    hooks = _lora_forward(plain, lora_pairs(lora), (alpha or rank) / rank)
    with_lora = plain(x, t, plain.encode_text(text))
    for h in hooks:
        h.remove()
    base = plain(x, t, plain.encode_text(text))
    merged = _model(sd)
    names = merge_lora(merged, lora, alpha=alpha)
    out = merged(x, t, merged.encode_text(text))
    assert len(names) == 2 * 10  # 2 blocks x (self q k v o, cross q k v o, ffn.0, ffn.2)
    assert (with_lora - base).abs().max() > 1e-2  # the LoRA really changes the output
    assert (out - with_lora).abs().max() < TOL


def test_longlive_folder_merges_its_lora_at_load(tmp_path, wan_base):
    folder = write_longlive(tmp_path / "longlive", wan_base, rank=4, alpha=2.0)
    pipe = streamgen.load_pipeline(str(folder), device="cpu")
    sd = tiny_state_dict(0)
    expect = _model(sd)
    merge_lora(expect, torch.load(folder / "lora.pt"), alpha=2.0)
    for name, p in expect.state_dict().items():
        assert torch.equal(pipe.model.state_dict()[name].float(), p), name
    d = pipe.describe()
    assert d["lora"]["merged_modules"] == 20 and d["family"] == "longlive"


def test_a_lora_that_does_not_fit_is_named():
    model = _model(tiny_state_dict(0))
    bad = lora_state_dict(tiny_state_dict(0))
    bad["base_model.model.blocks.0.self_attn.q.lora_B.weight"] = torch.zeros(5, 4)
    with pytest.raises(ValueError, match=r"blocks\.0\.self_attn\.q: lora_A \(4, 64\) / lora_B \(5, 4\)"):
        merge_lora(model, bad)
    stray = {"base_model.model.blocks.0.norm3.lora_A.weight": torch.zeros(4, 64),
             "base_model.model.blocks.0.norm3.lora_B.weight": torch.zeros(64, 4)}
    with pytest.raises(KeyError, match="blocks.0.norm3"):
        merge_lora(model, stray)
