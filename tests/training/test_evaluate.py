"""`streamgen evaluate` on a tiny real Pong dataset and an untrained pipeline of the shipped world's architecture (behaviour, not
quality): priming, rollouts under the episode's actions, the copy-last baseline, action following, the
audio-visual measure, teacher comparison and the stability run all produce consistent numbers."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from streamgen.checkpoints.io import save_checkpoint
from streamgen.decoders.audio_autoencoder import AudioAutoencoder
from streamgen.decoders.video_autoencoder import VideoAutoencoder
from streamgen.pipeline import load_pipeline, model_config, random_pipeline
from streamgen.training.data.atari import build_dataset
from streamgen.training.data.games import game_spec
from streamgen.training.data.locate import locate_many
from streamgen.training.evaluate import evaluate, load_episodes, psnr, starts_of
from streamgen.training.evaluate_cli import main
from streamgen.training.ship_world import write_world_folder


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    data = build_dataset("pong", root / "pong", episodes=1, steps_per_episode=96, seed=5, eval_episodes=1, progress=False)
    torch.manual_seed(0)
    pipe = random_pipeline(model_config("world"), device="cpu")  # the shipped architecture, random weights
    save_checkpoint(root / "net", pipe.config, pipe.model)
    (root / "ae").mkdir()
    VideoAutoencoder().save(root / "ae" / "video_ae.safetensors")  # untrained autoencoders
    AudioAutoencoder().save(root / "ae" / "audio_ae.safetensors")
    folder = write_world_folder(root / "world", root / "net", root / "ae", data, context=4)
    return data, folder


def test_world_folder_pipeline_primes_from_its_start_context(world):
    data, folder = world
    pipe = load_pipeline(str(folder), device="cpu")
    assert pipe.can_prime and pipe.start_context["video"].shape == (4, 64, 64, 3)
    s = pipe.start(seed=0)
    assert s.next_frame == 2 and s.block_index == 1  # one primed block
    chunk = s.step()
    assert chunk.video.shape == (4, 64, 64, 3) and chunk.frame_index == 0
    assert chunk.audio.shape == (12800, 1) and chunk.sample_rate == 48000
    with pytest.raises(ValueError, match="whole|multiple"):
        s.prime(np.zeros((3, 64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="no video encoder"):
        random_pipeline(model_config("world"), device="cpu").start(prime=False).prime(np.zeros((4, 64, 64, 3), np.uint8))


def test_evaluate_reports_consistent_numbers(world):
    data, folder = world
    torch.set_num_threads(1)
    pipe = load_pipeline(str(folder), device="cpu")
    out = evaluate(pipe, data, teacher=pipe, starts=1, context=4, frames=16, direction_blocks=1, stability_frames=40,
                   next_block_starts=2)
    json.dumps(out)  # plain JSON
    assert out["starts"] == 1 and out["rollout_frames"] == 16
    _, eps = load_episodes(data, "eval")
    ep = eps[0]
    # The baseline is computed independently here: the last context frame held against the next 16.
    s = 0  # the first start of the only episode
    want = psnr(np.repeat(ep["frames"][s + 3][None], 16, 0), ep["frames"][s + 4 : s + 20]).mean()
    assert out["psnr"]["copy_last_16"] == pytest.approx(want)
    assert np.isfinite(out["psnr"]["rollout_16"]) and out["psnr"]["rollout_16"] < 60
    af = out["action_following"]
    assert 0.0 <= af["within_tolerance"] <= 1.0 and af["frames"] == 16 and af["up_above_down"] in (0.0, 1.0)
    shares = list(af["within_by_tolerance"].values())
    assert af["within_by_tolerance"]["3"] == af["within_tolerance"] and shares == sorted(shares)  # wider: never fewer
    # 16 frames: the short share is the whole share; a missing paddle counts as far off, so never more than found.
    assert af["within_tolerance_16"] == af["within_tolerance"] and af["within_tolerance"] <= af["found"] <= 1.0
    ref = out["paddle_reference"]  # the dynamics table of the training episode, rolled out on the same frames
    assert ref["frames"] == af["frames"] and ref["keys"] > 0 and ref["within_by_tolerance"]["3"] == ref["within_tolerance"]
    assert set(out["audio_visual"]) == {"generated", "emulator"}
    nb = out["next_block_following"]
    assert nb["frames"] > 0 and 0.0 <= nb["within_tolerance"] <= 1.0
    # The copy-last share, computed here from the emulator's paddle at the two starts (0 and the last one).
    y = locate_many(ep["frames"], game_spec("pong").player)[:, 0]
    starts = starts_of(ep, 8, 2, 4)
    err = np.concatenate([np.abs(y[s + 3] - y[s + 4 : s + 8]) for s in starts])
    err = err[~np.isnan(y[np.concatenate([np.arange(s + 4, s + 8) for s in starts])])]
    assert nb["copy_last_within_tolerance"] == pytest.approx(float((np.nan_to_num(err, nan=1e9) <= 3.0).mean()))
    # The same pipeline as its own teacher: identical seeds give identical rollouts, so the margin is 0.
    assert out["teacher"]["student_minus_teacher_16"] == pytest.approx(0.0, abs=1e-9)
    st = out["stability"]
    assert st["frames"] == 40 and isinstance(st["collapsed"], bool) and st["max_channel_drift"] >= 0


def test_evaluate_command_prints_json(world, capsys):
    data, folder = world
    assert main(["--model", str(folder), "--data", str(data), "--starts", "1", "--context", "4", "--frames", "8",
                 "--direction-blocks", "0", "--stability-frames", "0", "--threads", "1", "--split-episodes", "1",
                 "--split-steps", "60", "--split-contexts", "1"]) == 0
    printed = capsys.readouterr()
    out = json.loads(printed.out)
    assert out["rollout_frames"] == 8 and "stability" not in out
    # The counterfactual measure rides along, on the validation split unless told otherwise; the old measures stay.
    cf = out["counterfactual"]
    assert cf["split"] == "val" and {"paddle", "dynamics_reference", "copy_last", "ball", "old"} <= set(cf)
    assert "action_following" in out and "psnr" in json.dumps(out)
    # Progress goes to stderr, one bar per phase, counting the rollouts it reports.
    assert "evaluate: rollouts: 100%" in printed.err and f"{out['starts']}/{out['starts']}" in printed.err


def test_evaluate_measures_the_test_split_when_asked(world, capsys):
    data, folder = world
    assert main(["--model", str(folder), "--data", str(data), "--starts", "1", "--context", "4", "--frames", "8",
                 "--direction-blocks", "0", "--stability-frames", "0", "--next-block-starts", "0", "--threads", "1",
                 "--split", "test", "--split-episodes", "1", "--split-steps", "60", "--split-contexts", "1",
                 "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["counterfactual"]["split"] == "test"
