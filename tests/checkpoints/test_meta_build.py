"""Building on the meta device and loading with assign=True: the loaded tensors become the parameters."""
import math
import time

import pytest
import torch

from streamgen.checkpoints import build_model, check_state_dict, load_checkpoint_dir, save_checkpoint
from streamgen.checkpoints.adapters import expected_shapes
from streamgen.presets import preset
from streamgen.models.dit import CausalDiT


def _state(seed=0):
    torch.manual_seed(seed)
    return {k: torch.randn_like(v) for k, v in CausalDiT(preset("tiny")).state_dict().items()}


def test_parameters_are_the_loaded_tensors():
    sd = _state()
    ptrs = {k: v.data_ptr() for k, v in sd.items()}
    values = {k: v.clone() for k, v in sd.items()}
    model = build_model(preset("tiny"), sd)
    assert sd == {}  # consumed, so the caller holds no second reference
    params = dict(model.named_parameters())
    assert set(params) == set(ptrs)
    for name, p in params.items():
        assert not p.is_meta and isinstance(p, torch.nn.Parameter) and p.requires_grad
        assert p.data_ptr() == ptrs[name], name  # no copy was made
        assert torch.equal(p.detach(), values[name])
    assert not any(b.is_meta for b in model.buffers())
    c = model.config
    x = torch.randn(1, 2, c.in_channels, c.latent_height, c.latent_width)
    out = model(x, torch.full((1, 2), 500.0), model.encode_text(torch.randn(1, 3, c.text_dim)))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_dtype_cast_and_folder_load_leave_no_meta(tmp_path):
    model = build_model(preset("tiny"), _state(), dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    save_checkpoint(tmp_path, model.config, model)
    _, loaded = load_checkpoint_dir(tmp_path, "cpu")
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}  # the file's dtype is kept
    assert not any(t.is_meta for t in list(loaded.parameters()) + list(loaded.buffers()))


def test_large_presets_cost_nothing_on_meta():
    start = time.perf_counter()
    counts = {name: sum(math.prod(s) for s in expected_shapes(preset(name)).values()) for name in ("wan2.1-1.3b", "wan2.1-14b")}
    assert time.perf_counter() - start < 10.0
    # Wan2.1's published sizes: 1.3B and 14B parameters (the transformer alone).
    assert 1.2e9 < counts["wan2.1-1.3b"] < 1.5e9
    assert 13.5e9 < counts["wan2.1-14b"] < 14.5e9


def test_mismatches_are_listed_by_name():
    sd = _state()
    sd["blocks.0.ffn.0.weight"] = torch.zeros(7, 7)
    del sd["head.modulation"]
    sd["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as err:
        check_state_dict(preset("tiny"), sd, "probe")
    msg = str(err.value)
    assert "head.modulation" in msg and "extra.weight" in msg and "blocks.0.ffn.0.weight: (7, 7)" in msg
