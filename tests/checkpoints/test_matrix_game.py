"""Matrix-Game 2.0's release layout (tiny random weights, its real keys: tests/checkpoints/mg2_layout.py) loads
with every key consumed, streams 3 blocks through ``streamgen generate`` and the server's WebSocket with
keyboard and mouse, follows its actions, and names a missing part in one line."""
import asyncio

import av
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import streamgen
from streamgen.checkpoints import load_checkpoint_dir
from tests.checkpoints.mg2_layout import TEMPLERUN, UNIVERSAL, release_shapes, write_matrix_game_release
from tests.cli.helpers import run_cli

# Wan's VAE: the first latent frame decodes to 1 pixel frame, later ones to 4; 3 blocks of 3 latent frames.
FRAMES = (1 + 4 * 2) + 2 * (4 * 3)
KEY_W = {"kind": "key", "key": "KeyW", "down": True, "t_ms": 0}
MOUSE = {"kind": "mouse", "dx": 40.0, "dy": -25.0, "t_ms": 0}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return write_matrix_game_release(tmp_path_factory.mktemp("mg2") / "Matrix-Game-2.0")


def test_every_released_key_is_consumed_and_the_settings_are_its_own(release):
    config, model = load_checkpoint_dir(release, overrides={"latent_height": 4, "latent_width": 4})
    theirs = load_file(str(release / "diffusion_pytorch_model.safetensors"))
    ours = model.state_dict()
    assert {k: tuple(v.shape) for k, v in theirs.items()} == release_shapes(UNIVERSAL)
    renamed = {k.replace(".action_model.", ".action."): v for k, v in theirs.items()}
    assert set(renamed) == set(ours)  # none missing, none left over
    assert all(torch.equal(ours[k], renamed[k]) for k in ours)
    a = config.actions
    assert (config.family, config.window_frames, config.sink_frames, config.denoising_steps) == (
        "matrix-game-2", 6, 0, (1000.0, 666.0, 333.0))
    assert (a.module, a.keys, a.mouse_axes, a.window_frames, a.num_layers) == (
        "matrix-game-2", ("KeyW", "KeyS", "KeyA", "KeyD"), ("-dy", "dx"), 3, 1)
    assert config.in_channels + config.cond_channels == 36 and config.takes_prompt is False
    assert not hasattr(model, "text_embedding") and model.img_emb.proj[0].weight.shape == (160,)
    with pytest.raises(ValueError, match="has no text input"):
        model.encode_text(torch.zeros(1, 8, 4096))


def test_mouse_up_and_right_are_the_release_s_look_up_and_right(release):
    from streamgen.actions import ActionState

    pipe = streamgen.load_pipeline(str(release), device="cpu")
    state = ActionState(pipe.action_spec, clock="stream")
    windows = state.block([{"kind": "mouse", "dx": 10.0, "dy": -10.0, "t_ms": 0}], 3)
    assert windows.raw_mouse[0].tolist() == pytest.approx([0.1, 0.1])  # pitch up, yaw right: I + L of the release


def test_templerun_distilled_file_with_its_wrapper_prefix(tmp_path):
    folder = write_matrix_game_release(tmp_path / "Matrix-Game-2.0", "templerun_distilled_model", action=TEMPLERUN,
                                       weights="templerun_7dim_onlykey.safetensors", prefixed=True)
    pipe = streamgen.load_pipeline(str(folder), device="cpu")
    assert pipe.describe()["keys"] == ["KeyQ", "KeyW", "KeyS", "KeyZ", "KeyC", "KeyA", "KeyD"]
    assert pipe.describe()["takes_mouse"] is False
    assert pipe.config.denoising_steps == (1000.0, 750.0, 500.0, 250.0)  # inference_templerun.yaml
    chunk = pipe.start(seed=0).step(actions=[{"kind": "key", "key": "KeyZ", "down": True, "t_ms": 0}])
    assert chunk.video.shape == (9, 32, 32, 3)


def test_gta_drive_keys_and_its_window_of_4_frames(tmp_path, caplog):
    import json
    import logging

    folder = write_matrix_game_release(tmp_path / "Matrix-Game-2.0", "gta_distilled_model",
                                       action={**UNIVERSAL, "keyboard_dim_in": 2})
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "local_attn_size": 4}))
    with caplog.at_level(logging.WARNING, logger="streamgen.checkpoints"):
        config, _ = load_checkpoint_dir(folder, overrides={"latent_height": 4, "latent_width": 4})
    assert config.actions.keys == ("KeyW", "KeyS") and config.actions.mouse_axes == ("-dy", "dx")
    assert config.window_frames == 6 and "local_attn_size 4 / sink 0 is not whole blocks of 3" in caplog.text


def _frames(pipe, events, blocks=3, **start):
    s = pipe.start(seed=3, **start)
    return [s.step(actions=events).video for _ in range(blocks)]


def test_keys_mouse_and_the_start_image_change_the_stream(release):
    pipe = streamgen.load_pipeline(str(release), device="cpu")
    for m in pipe.model.modules():  # a trained model's action outputs are not zero; wake the random ones
        for name in ("proj_mouse", "proj_keyboard"):
            if hasattr(m, name):
                torch.nn.init.normal_(getattr(m, name).weight, std=0.5)
    still = _frames(pipe, None)
    assert all(np.array_equal(a, b) for a, b in zip(still, _frames(pipe, None)))  # deterministic
    keys = _frames(pipe, [KEY_W])
    mouse = _frames(pipe, [MOUSE])
    # Block 0's frame 0 is the start image; later frames follow the actions.
    for other in (keys, mouse):
        assert not np.array_equal(still[1], other[1]) and not np.array_equal(still[2], other[2])
    assert not np.array_equal(keys[2], mouse[2])
    image = np.zeros((48, 80, 3), np.uint8)
    image[:, :40] = 255  # cropped to the centre 48 x 48 and resized to 32 x 32
    lit = _frames(pipe, None, image=image)
    assert not np.array_equal(lit[0], still[0])
    embeds = _frames(pipe, None, image=image, image_embeds=torch.randn(257, 160).numpy())
    assert not np.array_equal(embeds[0], lit[0])


def test_streams_3_blocks_through_generate(release, tmp_path):
    image = tmp_path / "start.png"
    from PIL import Image

    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(image)
    out = tmp_path / "mg2.mp4"
    proc = run_cli("generate", "--model", str(release), "--blocks", "3", "--start-image", str(image), "-o", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(container.streams.video[0])) == FRAMES
    assert "family matrix-game-2, block 3, window 6, sink 0, steps [1000.0, 666.0, 333.0] (shift 5)" in proc.stderr


def test_streams_3_blocks_over_the_websocket_with_keys_and_mouse(release):
    from streamgen_client.binary import MediaKind
    from tests.server.conftest import RunningServer
    from tests.server.ws_client import WsClient

    async def session(url):
        async with WsClient(url) as c:
            started = await c.start(release.name, seed=1)
            assert started["type"] == "started", started
            assert started["model"]["keys"] == ["KeyW", "KeyS", "KeyA", "KeyD"] and started["model"]["takes_mouse"]
            for event in (KEY_W, MOUSE, {**KEY_W, "key": "KeyD"}):
                await c.send({"type": "action", "seq": next(c.seq), **event})
            await c.wait_for(lambda: sum(h.kind == MediaKind.VIDEO_JPEG for h, _ in c.media) >= FRAMES, timeout=120,
                             what="3 blocks of Matrix-Game 2.0")
            assert c.errors() == []
            return [h.block_index for h, _ in c.media if h.kind == MediaKind.VIDEO_JPEG][:FRAMES]

    with RunningServer(model=str(release)) as server:
        runtime = server.get_json("/v1/models")["runtime"][release.name]
        assert runtime["family"] == "matrix-game-2" and runtime["decoder"]["kind"] == "wan-vae"
        assert runtime["image_encoder"]["kind"] == "stand-in" and runtime["text_encoder"]["kind"] == "none"
        blocks = asyncio.run(session(server.url))
    assert [blocks.count(b) for b in range(3)] == [9, 12, 12]


def test_a_missing_part_is_named_in_one_line(tmp_path):
    no_vae = write_matrix_game_release(tmp_path / "a", vae=False)
    with pytest.raises(FileNotFoundError) as err:
        streamgen.load_pipeline(str(no_vae), device="cpu")
    assert "\n" not in str(err.value) and "Wan2.1_VAE.pth" in str(err.value) and "VAE" in str(err.value)
    cut = write_matrix_game_release(tmp_path / "b")
    weights = cut / "diffusion_pytorch_model.safetensors"
    sd = load_file(str(weights))
    del sd["blocks.0.action_model.t_qkv.weight"]
    save_file(sd, str(weights))
    with pytest.raises(Exception) as err:
        streamgen.load_pipeline(str(cut), device="cpu")
    assert "blocks.0.action.t_qkv.weight" in str(err.value)
