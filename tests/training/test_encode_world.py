"""Encoding Atari episodes into world-model latent episodes: action windows built by the session's own
ActionState from ALE actions (aligned to the frames they produced), shapes the LatentFolder accepts, and
the ALE <-> browser key mapping both ways."""
from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.torch import save_file

from streamgen.pipeline import model_config
from streamgen.decoders.audio_autoencoder import AudioAutoencoder
from streamgen.decoders.video_autoencoder import VideoAutoencoder
from streamgen.training.data.ale_keys import ALE_ACTION_KEYS, action_for_keys, keys_for_action
from streamgen.training.data.atari import build_dataset
from streamgen.training.data.encode_world import action_windows, encode_episode
from streamgen.training.sources import LatentFolder

NAMES = ["NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE"]


def test_ale_actions_and_keys_round_trip():
    for name, keys in ALE_ACTION_KEYS.items():
        assert action_for_keys(keys) == name
    assert keys_for_action("RIGHT") == {"ArrowUp"}  # Pong: RIGHT moves the paddle up
    assert action_for_keys({"ArrowUp", "ArrowDown"}) == "NOOP"
    with pytest.raises(ValueError, match="UPLEFT"):
        keys_for_action("UPLEFT")


def test_action_windows_hold_the_keys_of_each_raw_frame():
    cfg = model_config("world")
    rng = np.random.default_rng(0)
    rows = [NAMES[i] for i in rng.integers(0, 6, 48)]  # raw frame r's action
    kb, ms = action_windows(cfg, rows)
    tu, w = cfg.temporal_upsample, cfg.actions.window_frames
    assert kb.shape == (48 // tu, w * tu, 3) and ms.shape[-1] == 0
    for f in range(kb.shape[0]):
        for j in range(w * tu):
            r = (f - w + 1) * tu + j  # raw frame of window row j
            want = [k in keys_for_action(rows[r]) for k in cfg.actions.keys] if r >= 0 else [False] * 3
            assert kb[f, j].tolist() == [float(x) for x in want], (f, j)


def test_encoded_episode_feeds_the_latent_folder(tmp_path):
    cfg = model_config("world")
    data = build_dataset("pong", tmp_path / "pong", episodes=1, steps_per_episode=40, seed=2, eval_episodes=0, progress=False)
    meta = json.loads((data / "meta.json").read_text())
    item = encode_episode(data / meta["episodes"]["train"][0], cfg, VideoAutoencoder().eval(), AudioAutoencoder().eval(),
                          meta["action_names"])
    assert item["latents"].shape == (20, 4, 16, 16) and item["audio"].shape == (160, 16)
    ep = np.load(data / meta["episodes"]["train"][0])
    # Raw frame r holds the keys of actions[r - 1] (the action that produced frame r).
    r = 9
    want = keys_for_action(NAMES[ep["actions"][r - 1]])
    f, j = r // 2, r % 2 + 2  # latent frame of r; the row of r in its window of 2 latent frames
    assert item["keyboard"][f, j].tolist() == [float(k in want) for k in cfg.actions.keys]
    item.pop("ale_actions")
    (tmp_path / "lat").mkdir()
    save_file(item, str(tmp_path / "lat" / "ep.safetensors"))
    batch = LatentFolder(tmp_path / "lat", cfg, num_frames=6, batch=2, seed=0).batch_at(0)
    assert batch["latents"].shape == (2, 6, 4, 16, 16) and batch["audio"].shape == (2, 48, 16)
    assert batch["keyboard"].shape == (2, 6, 4, 3)
