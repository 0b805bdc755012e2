"""Each released family streams with its own public settings, detected or stated, and says which."""
import json
import logging

import pytest
import torch

import streamgen
from streamgen.checkpoints import load_checkpoint_dir
from streamgen.families import FAMILIES
from tests.checkpoints.folder_layouts import GRID, TEXT_LEN, tiny_state_dict, write_longlive, write_self_forcing


def _student(folder, name="student.pt", **spec):
    """A generator checkpoint with no base (preview decoder) and a streamgen.json of ``spec``."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"generator_ema": {"model." + k: v for k, v in tiny_state_dict(0).items()}}, folder / name)
    (folder / "streamgen.json").write_text(json.dumps({"num_heads": 4, "overrides": {**GRID, "text_len": TEXT_LEN}, **spec}))
    return folder


def _frames_held(session):
    return sorted(f for f in session.cache.frame_at_slot if f >= 0)


def test_self_forcing_streams_with_global_attention_over_21_frames(tmp_path, wan_base, caplog):
    with caplog.at_level(logging.INFO, logger="streamgen.checkpoints"):
        pipe = streamgen.load_pipeline(str(write_self_forcing(tmp_path / "sf", wan_base)), device="cpu")
    c = pipe.config
    assert (c.family, c.frames_per_block, c.window_frames, c.sink_frames) == ("self-forcing", 3, 21, 0)
    assert "family self-forcing" in caplog.text and "global attention over 21 frames" in caplog.text
    session = pipe.start(prompt="a dog runs across a field of snow")
    for _ in range(7):  # Self-Forcing's 21 frames: every block attends to every frame generated before it
        session.step()
        assert _frames_held(session) == list(range(session.next_frame))
    session.step()  # past its clip the 21-frame window rolls, with no sink
    assert _frames_held(session) == list(range(3, 24))
    streaming = pipe.describe()["streaming"]
    assert (streaming["window_frames"], streaming["sink_frames"], streaming["frames_per_block"]) == (21, 0, 3)


def test_longlive_streams_with_window_12_and_sink_3(tmp_path, diffusers_base):
    pipe = streamgen.load_pipeline(str(write_longlive(tmp_path / "ll", diffusers_base)), device="cpu")
    c = pipe.config
    assert (c.family, c.frames_per_block, c.window_frames, c.sink_frames) == ("longlive", 3, 12, 3)
    session = pipe.start(prompt="waves roll over dark rocks")
    for _ in range(6):
        session.step()
    assert _frames_held(session) == [0, 1, 2] + list(range(9, 18))  # the 3-frame sink and the last 9 frames
    assert pipe.describe()["streaming"]["sink_frames"] == 3


@pytest.mark.parametrize("family", sorted(set(FAMILIES) - {"matrix-game-2"}))
def test_a_family_stated_in_streamgen_json_is_applied(tmp_path, family):
    pipe = streamgen.load_pipeline(str(_student(tmp_path / family, family=family)), device="cpu")
    want = FAMILIES[family].settings
    c = pipe.config
    assert c.family == family
    assert {k: getattr(c, k) for k in want} == want
    assert pipe.describe()["family"] == family
    assert pipe.start().step().video.shape[0] == c.frames_per_block * c.temporal_upsample


def test_causvid_steps_are_its_own_unwarped_list(tmp_path):
    pipe = streamgen.load_pipeline(str(_student(tmp_path / "cv", name="causvid_dmd.pt")), device="cpu")
    assert pipe.config.family == "causvid"  # from the file name
    assert pipe.timesteps == (1000.0, 757.0, 522.0)


def test_a_generator_with_no_hint_is_self_forcing_and_says_why(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="streamgen.checkpoints"):
        pipe = streamgen.load_pipeline(str(_student(tmp_path / "x")), device="cpu")
    assert pipe.config.family == "self-forcing" and "taken as Self-Forcing's release" in caplog.text
    # no base: the preview decoder and the hash text encoder, and describe() says so
    d = pipe.describe()
    assert d["decoder"]["kind"] == "preview" and d["text_encoder"]["kind"] == "hash"


def test_overrides_go_on_top_of_the_family(tmp_path):
    config, _ = load_checkpoint_dir(_student(tmp_path / "o", family="longlive"), "cpu",
                                    overrides={"num_heads": 4, "window_frames": 15, **GRID})
    assert (config.family, config.window_frames, config.sink_frames) == ("longlive", 15, 3)


def test_an_unknown_family_is_named(tmp_path):
    with pytest.raises(KeyError, match="unknown family 'selfforcing'"):
        streamgen.load_pipeline(str(_student(tmp_path / "u", family="selfforcing")), device="cpu")


def test_a_released_base_lends_its_parts_not_its_head_count(tmp_path, wan_base):
    """A 14B student may stream with the 1.3B folder's VAE and umT5: a base of a released width (here a
    config saying 1536 wide, 12 heads) does not give its heads to a student of another width."""
    import shutil

    base = tmp_path / "Wan2.1-T2V-1.3B"
    shutil.copytree(wan_base, base)
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "dim": 1536, "num_heads": 12}))
    student = _student(tmp_path / "sf", base=str(base))
    spec = json.loads((student / "streamgen.json").read_text())
    del spec["num_heads"]
    (student / "streamgen.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="num_heads for dim=64 is not recorded"):
        streamgen.load_pipeline(str(student), device="cpu")
    spec["num_heads"] = 4
    (student / "streamgen.json").write_text(json.dumps(spec))
    assert streamgen.load_pipeline(str(student), device="cpu").config.num_heads == 4
