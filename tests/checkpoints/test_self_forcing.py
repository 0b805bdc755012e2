"""Self-Forcing / LongLive style checkpoints (generator / generator_ema, ``model.`` prefix) load."""
import pytest
import torch

from streamgen.checkpoints import diffusers_to_ours, load_checkpoint_dir, load_state_dict_any, save_safetensors
from tests.checkpoints.reference import GRID, max_diff, ours_forward, randomise

TOL = 1e-5
OVERRIDES = {"num_heads": 2, **GRID}  # the tiny heads (12 wide) cannot be inferred from Wan's 128 rule


def _prefixed(sd, prefix="model."):
    return {prefix + k: v.clone() for k, v in sd.items()}


@pytest.fixture(scope="module")
def weights(ref_small):
    ema = diffusers_to_ours(ref_small.model.state_dict())
    other = ref_small.model.__class__(**ref_small.model.config)
    randomise(other, seed=99)
    return ema, diffusers_to_ours(other.state_dict())


def test_torch_save_generator_ema_is_preferred(ref_small, weights, tmp_path):
    ema, plain = weights
    path = tmp_path / "self_forcing_dmd.pt"
    torch.save({"generator": _prefixed(plain), "generator_ema": _prefixed(ema), "critic": {"w": torch.ones(3)}}, path)
    config, model = load_checkpoint_dir(path, "cpu", overrides=OVERRIDES)
    assert config.name == "self_forcing_dmd"
    assert max_diff(ours_forward(model, ref_small.x, ref_small.t, ref_small.text), ref_small.out) < TOL

    _, model = load_checkpoint_dir(path, "cpu", overrides=OVERRIDES, ema=False)
    assert max_diff(model.blocks[0].self_attn.q.weight, plain["blocks.0.self_attn.q.weight"]) == 0.0
    assert max_diff(ours_forward(model, ref_small.x, ref_small.t, ref_small.text), ref_small.out) > 1e-2


def test_generator_only_and_fsdp_names(ref_small, weights, tmp_path):
    ema, _ = weights
    wrapped = {k.replace("blocks.", "_fsdp_wrapped_module.blocks."): v for k, v in _prefixed(ema).items()}
    path = tmp_path / "longlive_base.pt"
    torch.save({"generator": wrapped}, path)
    _, model = load_checkpoint_dir(path, "cpu", overrides=OVERRIDES)
    assert max_diff(ours_forward(model, ref_small.x, ref_small.t, ref_small.text), ref_small.out) < TOL


@pytest.mark.parametrize("prefix", ["model.", "generator_ema.model."])
def test_safetensors_variants(ref_small, weights, tmp_path, prefix):
    ema, _ = weights
    sd = _prefixed(ema, prefix)
    layout, _ = load_state_dict_any(sd)
    assert layout == "self_forcing"
    folder = tmp_path / "student"
    save_safetensors(sd, folder / "student.safetensors")
    _, model = load_checkpoint_dir(folder, "cpu", overrides=OVERRIDES)  # a folder holding one weights file
    assert max_diff(ours_forward(model, ref_small.x, ref_small.t, ref_small.text), ref_small.out) < TOL


class _NotATensor:
    pass


def test_pickles_with_objects_are_refused(tmp_path):
    path = tmp_path / "bad.pt"
    torch.save({"generator": {"model.x": torch.ones(1)}, "extra": _NotATensor()}, path)
    with pytest.raises(ValueError, match="bad.pt"):
        load_checkpoint_dir(path, "cpu")


def test_missing_generator_entries_are_named(tmp_path):
    path = tmp_path / "empty.pt"
    torch.save({"generator": {}, "step": torch.tensor(3)}, path)
    with pytest.raises((KeyError, ValueError), match="generator"):
        load_checkpoint_dir(path, "cpu")
