"""Original Wan2.1-layout weights -> CausalDiT: same output as diffusers; folder and config inference."""
import pytest
import torch

from streamgen.checkpoints import (
    build_model, config_from_wan_state_dict, diffusers_to_ours, load_checkpoint_dir, load_state_dict_any,
    ours_to_diffusers, save_safetensors,
)
from streamgen.checkpoints.io import write_json
from streamgen.checkpoints.wan_original import wan_config_from
from tests.checkpoints.reference import GRID, max_diff, ours_forward

TOL = 1e-5


def _wan_sd(ref):
    """A Wan2.1-named state dict made from diffusers' by the inverse of the one mapping table."""
    return diffusers_to_ours(ref.model.state_dict())


def test_mapping_round_trip_is_exact(ref):
    sd = ref.model.state_dict()
    wan = diffusers_to_ours(sd)
    assert "blocks.1.self_attn.norm_q.weight" in wan and "head.modulation" in wan
    back = ours_to_diffusers(wan)
    assert list(back) == list(sd)
    assert all(back[k] is sd[k] for k in sd)  # renamed, never copied


def test_wan_layout_gives_diffusers_output(ref):
    heads = ref.model.config.num_attention_heads
    layout, sd = load_state_dict_any(_wan_sd(ref))
    assert layout == "wan_original"
    config = config_from_wan_state_dict(sd, overrides={"num_heads": heads, **GRID})
    out = ours_forward(build_model(config, sd), ref.x, ref.t, ref.text)
    assert max_diff(out, ref.out) < TOL
    out = ours_forward(build_model(config, _wan_sd(ref)), ref.x, ref.t_frames, ref.text)
    assert max_diff(out, ref.out_frames) < TOL


def test_config_inferred_from_weights(ref):
    c = ref.model.config
    config = config_from_wan_state_dict(_wan_sd(ref), overrides={"num_heads": c.num_attention_heads})
    assert (config.dim, config.ffn_dim, config.num_layers) == (c.num_attention_heads * c.attention_head_dim, c.ffn_dim, c.num_layers)
    assert (config.in_channels, config.out_channels, config.text_dim, config.freq_dim) == (
        c.in_channels, c.out_channels, c.text_dim, c.freq_dim)
    assert config.cross_attn_norm == c.cross_attn_norm and config.qk_norm


def test_heads_come_from_the_released_widths_or_are_asked_for():
    def sd(dim):
        return {
            "patch_embedding.weight": torch.zeros(dim, 16, 1, 2, 2, device="meta"),
            "text_embedding.0.weight": torch.zeros(dim, 32, device="meta"),
            "time_embedding.0.weight": torch.zeros(dim, 256, device="meta"),
            "blocks.0.ffn.0.weight": torch.zeros(512, dim, device="meta"), "head.head.weight": torch.zeros(64, dim, device="meta"),
        }

    assert config_from_wan_state_dict(sd(1536)).num_heads == 12  # Wan2.1-1.3B
    assert config_from_wan_state_dict(sd(5120)).num_heads == 40  # Wan2.1-14B
    with pytest.raises(ValueError, match="num_heads for dim=256 .*streamgen.json"):
        config_from_wan_state_dict(sd(256))  # no released model is 256 wide: not guessed as 256 // 128
    assert config_from_wan_state_dict(sd(256), overrides={"num_heads": 4}).num_heads == 4


def test_wan_folder_loads(ref, tmp_path):
    heads = ref.model.config.num_attention_heads
    probe = config_from_wan_state_dict(_wan_sd(ref), overrides={"num_heads": heads, **GRID})
    write_json(tmp_path / "config.json", {**wan_config_from(probe), "text_len": 7})
    save_safetensors(_wan_sd(ref), tmp_path / "diffusion_pytorch_model.safetensors")
    config, model = load_checkpoint_dir(tmp_path, "cpu", overrides=GRID)
    assert config.num_heads == heads and config.text_len == 7  # read from Wan's config.json
    assert max_diff(ours_forward(model, ref.x, ref.t, ref.text), ref.out) < TOL


def test_wan_config_disagreeing_with_weights_is_refused(ref_small, tmp_path):
    probe = config_from_wan_state_dict(_wan_sd(ref_small), overrides={"num_heads": 2, **GRID})
    write_json(tmp_path / "config.json", {**wan_config_from(probe), "num_layers": 30})
    save_safetensors(_wan_sd(ref_small), tmp_path / "diffusion_pytorch_model.safetensors")
    with pytest.raises(ValueError, match="num_layers=30"):
        load_checkpoint_dir(tmp_path, "cpu", overrides=GRID)


def test_image_to_video_weights_are_named_in_the_error(ref_small):
    sd = _wan_sd(ref_small)
    sd["img_emb.proj.0.weight"] = torch.zeros(4)
    _, ours = load_state_dict_any(sd)
    config = config_from_wan_state_dict(ours, overrides={"num_heads": 2, **GRID})
    with pytest.raises(ValueError, match="img_emb.proj.0.weight"):
        build_model(config, ours)
    with pytest.raises(KeyError, match="img_emb"):
        ours_to_diffusers(sd)
