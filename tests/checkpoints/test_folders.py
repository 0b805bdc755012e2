"""Every Wan-family layout, written with tiny random weights in its real files and keys, streams 3 blocks
through ``streamgen generate``; a folder missing one component fails with one line naming it."""
import shutil

import av
import numpy as np
import pytest

import streamgen
from tests.checkpoints.folder_layouts import write_longlive, write_self_forcing, write_taew, write_wan_original
from tests.cli.helpers import run_cli

# Wan's VAE: the first latent frame decodes to 1 pixel frame, later ones to 4; 3 blocks of 3 latent frames.
FRAMES = (1 + 4 * 2) + 2 * (4 * 3)


@pytest.fixture(scope="module")
def layouts(tmp_path_factory, wan_base, diffusers_base):
    root = tmp_path_factory.mktemp("students")
    return {"wan_original": wan_base, "diffusers": diffusers_base,
            "self_forcing": write_self_forcing(root / "self_forcing", wan_base),
            "longlive": write_longlive(root / "longlive", diffusers_base)}


def _mp4_frames(path):
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])]


@pytest.mark.parametrize("layout", ["wan_original", "diffusers", "self_forcing", "longlive"])
def test_each_layout_streams_3_blocks_through_generate(layouts, layout, tmp_path):
    out = tmp_path / "out.mp4"
    proc = run_cli("generate", "--model", str(layouts[layout]), "--blocks", "3", "--prompt", "a cat walks along the beach",
                   "-o", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    frames = _mp4_frames(out)
    assert len(frames) == FRAMES and frames[0].shape == (32, 32, 3)
    assert np.std(np.stack(frames).astype(np.float32)) > 1.0  # the decoded picture is not flat
    assert any((a != b).any() for a, b in zip(frames, frames[1:]))


def test_the_pipeline_uses_the_folders_vae_and_umt5(layouts):
    pipe = streamgen.load_pipeline(str(layouts["self_forcing"]), device="cpu")
    d = pipe.describe()
    assert d["decoder"]["kind"] == "wan-vae" and d["decoder"]["file"].endswith("Wan2.1_VAE.pth")
    assert d["text_encoder"]["kind"] == "umt5" and d["base"] == str(layouts["wan_original"])
    a, b = pipe.encode_prompt("a cat walks"), pipe.encode_prompt("a red car drives")
    assert not all(x[0].equal(y[0]) for x, y in zip(a, b))  # umT5 really reads the prompt


def test_the_tiny_decoder_is_selectable(tmp_path, wan_base):
    folder = write_self_forcing(tmp_path / "sf", wan_base)
    write_taew(folder / "taew2_1.pth")
    pipe = streamgen.load_pipeline(str(folder), device="cpu", decoder="tiny")
    assert pipe.describe()["decoder"]["kind"] == "tiny-wan"
    s = pipe.start(prompt="a dog runs")
    assert [s.step().video.shape[0] for _ in range(2)] == [9, 12]
    assert streamgen.load_pipeline(str(folder), device="cpu").describe()["decoder"]["kind"] == "wan-vae"  # default: quality


@pytest.mark.parametrize("remove, named", [
    ("Wan2.1_VAE.pth", "no VAE (the video decoder) Wan2.1_VAE.pth"),
    ("models_t5_umt5-xxl-enc-bf16.pth", "no umT5 text encoder models_t5_umt5-xxl-enc-bf16.pth"),
    ("google", "no umT5 tokenizer"),
])
def test_a_base_missing_one_component_is_one_line(tmp_path, wan_base, remove, named):
    base = tmp_path / "Wan2.1-T2V-tiny"
    shutil.copytree(wan_base, base)
    target = base / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    student = write_self_forcing(tmp_path / "sf", base)
    for path in (base, student):
        with pytest.raises(FileNotFoundError) as err:
            streamgen.load_pipeline(str(path), device="cpu")
        message = str(err.value)
        assert "\n" not in message and named in message and f"in {base}" in message, message
    proc = run_cli("generate", "--model", str(student), "--blocks", "1", "-o", str(tmp_path / "x.mp4"))
    assert proc.returncode != 0 and named in proc.stderr.strip().splitlines()[-1] and "Traceback" not in proc.stderr


def test_diffusers_folder_missing_its_vae_is_one_line(tmp_path, diffusers_base):
    folder = tmp_path / "d"
    shutil.copytree(diffusers_base, folder)
    shutil.rmtree(folder / "vae")
    with pytest.raises(FileNotFoundError, match=r"^.*: no VAE \(the video decoder\): looked for vae/config.json in .*$"):
        streamgen.load_pipeline(str(folder), device="cpu")


def test_a_student_with_a_base_given_on_the_command_line(tmp_path, wan_base):
    folder = write_self_forcing(tmp_path / "sf", wan_base)
    (folder / "streamgen.json").write_text('{"overrides": {"latent_height": 4, "latent_width": 4, "text_len": 8}}')
    with pytest.raises(ValueError, match="num_heads for dim=64 is not recorded"):  # no base: nothing states the heads
        streamgen.load_pipeline(str(folder), device="cpu")
    pipe = streamgen.load_pipeline(str(folder / "self_forcing_dmd.pt"), device="cpu", base=wan_base)  # the file itself
    assert pipe.describe()["decoder"]["kind"] == "wan-vae"
    out = tmp_path / "one.mp4"
    proc = run_cli("generate", "--model", str(folder / "self_forcing_dmd.pt"), "--base", str(wan_base), "--blocks", "1",
                   "-o", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(_mp4_frames(out)) == 9  # the VAE's first block: 1 + 4 * 2 frames
