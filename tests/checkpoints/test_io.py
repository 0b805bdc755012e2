"""Our checkpoint format: safetensors + JSON round trip, atomic writes, clear errors on missing files."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import save as serialize

import streamgen.checkpoints.io as ckio
from streamgen.checkpoints import load_checkpoint_dir, load_safetensors, save_checkpoint, save_safetensors
from streamgen.config import ModelConfig
from streamgen.presets import preset
from streamgen.models.dit import CausalDiT


def _tiny_model(seed=0):
    torch.manual_seed(seed)
    model = CausalDiT(preset("tiny"))
    torch.nn.init.normal_(model.head.head.weight)  # non-zero output
    return model


def _forward(model):
    c = model.config
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 2, c.in_channels, c.latent_height, c.latent_width, generator=g)
    text = torch.randn(1, 3, c.text_dim, generator=g)
    model.attention_backend = "reference"
    with torch.no_grad():
        return model(x, torch.tensor([[500.0, 250.0]]), model.encode_text(text))


def test_safetensors_round_trip_keeps_values_and_dtypes(tmp_path):
    tensors = {"a": torch.randn(3, 4), "b": torch.randn(5).to(torch.bfloat16), "c": torch.arange(6).view(2, 3).t()}
    path = save_safetensors(tensors, tmp_path / "sub" / "w.safetensors", {"step": 7})
    back = load_safetensors(path)
    assert set(back) == set(tensors)
    for k in tensors:
        assert back[k].dtype == tensors[k].dtype and torch.equal(back[k], tensors[k])
    assert ckio.safetensors_metadata(path)["step"] == "7"


def test_checkpoint_folder_round_trip(tmp_path):
    model = _tiny_model()
    save_checkpoint(tmp_path / "ck", model.config, model, metadata={"recipe": "test"})
    record = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert record["format"] == "streamgen" and record["metadata"] == {"recipe": "test"}
    config, loaded = load_checkpoint_dir(tmp_path / "ck", "cpu")
    assert config == model.config
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    assert torch.equal(_forward(loaded), _forward(model))
    config, _ = load_checkpoint_dir(tmp_path / "ck", "cpu", overrides={"window_frames": 8})
    assert config.window_frames == 8


def test_interrupted_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    old = {"w": torch.arange(1000, dtype=torch.float32)}
    save_safetensors(old, path)
    old_bytes = path.read_bytes()

    def half_then_fail(tensors, filename, metadata=None):
        data = serialize(tensors, metadata=metadata)
        with open(filename, "wb") as f:
            f.write(data[: len(data) // 2])
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(ckio, "save_file", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save_safetensors({"w": torch.zeros(5000)}, path)
    assert path.read_bytes() == old_bytes
    assert torch.equal(load_safetensors(path)["w"], old["w"])
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]  # no temporary file left behind


def test_failed_weights_write_does_not_update_config(tmp_path, monkeypatch):
    model = _tiny_model()
    save_checkpoint(tmp_path, model.config, model)
    config_before = (tmp_path / "config.json").read_bytes()

    def fail(*args, **kwargs):
        raise OSError("simulated")

    monkeypatch.setattr(ckio, "save_file", fail)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, model.config.with_(window_frames=8), _tiny_model(1))
    assert (tmp_path / "config.json").read_bytes() == config_before
    _, loaded = load_checkpoint_dir(tmp_path, "cpu")
    assert torch.equal(_forward(loaded), _forward(model))


def test_killed_writer_leaves_the_old_file(tmp_path):
    path = tmp_path / "model.safetensors"
    save_safetensors({"w": torch.ones(10)}, path)
    child = textwrap.dedent(
        f"""
        import os, torch
        import streamgen.checkpoints.io as ckio
        from safetensors.torch import save as serialize

        def die_midway(tensors, filename, metadata=None):
            data = serialize(tensors, metadata=metadata)
            with open(filename, "wb") as f:
                f.write(data[: len(data) // 2])
                f.flush()
            os._exit(9)  # the process dies: no exception handler, no cleanup

        ckio.save_file = die_midway
        ckio.save_safetensors({{"w": torch.zeros(100000)}}, {str(path)!r})
        """
    )
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, timeout=60)
    assert proc.returncode == 9, proc.stderr.decode()
    assert torch.equal(load_safetensors(path)["w"], torch.ones(10))
    leftovers = [n for n in os.listdir(tmp_path) if n != "model.safetensors"]
    assert leftovers and all(n.endswith(".tmp") for n in leftovers)  # only the dead writer's temp file


def test_missing_path_is_named(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere.*does not exist.*expected"):
        load_checkpoint_dir(missing, "cpu")


def test_missing_weights_beside_our_config(tmp_path):
    model = _tiny_model()
    save_checkpoint(tmp_path, model.config, model)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_checkpoint_dir(tmp_path, "cpu")


def test_missing_diffusers_weights_and_shards(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "WanTransformer3DModel", "num_attention_heads": 2}))
    with pytest.raises(FileNotFoundError, match="diffusion_pytorch_model.safetensors"):
        load_checkpoint_dir(tmp_path, "cpu")
    index = {"weight_map": {"patch_embedding.weight": "diffusion_pytorch_model-00001-of-00002.safetensors"}}
    (tmp_path / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(FileNotFoundError, match="00001-of-00002"):
        load_checkpoint_dir(tmp_path, "cpu")


def test_empty_folder_and_unknown_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        load_checkpoint_dir(tmp_path, "cpu")
    (tmp_path / "config.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="hello"):
        load_checkpoint_dir(tmp_path, "cpu")


def test_config_of_an_older_checkpoint_with_a_retired_field_still_reads():
    # Checkpoints written before num_train_timesteps left ModelConfig record it; reading ignores it.
    tiny = preset("tiny")
    assert ModelConfig.from_dict({**tiny.to_dict(), "num_train_timesteps": 1000}) == tiny
    with pytest.raises(ValueError, match="unknown ModelConfig fields \\['no_such_field'\\]"):
        ModelConfig.from_dict({**tiny.to_dict(), "no_such_field": 1})
