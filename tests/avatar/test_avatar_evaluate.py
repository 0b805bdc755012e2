"""The avatar evaluation (``streamgen evaluate --model avatar``): its measures on ground truth (the real
frames sync with correlation near 1 at lag 0, a delayed copy gives its delay, a recoloured face its colour
distance, a frozen stream no change), the whole evaluation on a small random avatar, the shipped folder's
layout, and the CLI's one-line refusals."""
import json

import numpy as np
import pytest

from streamgen.training.avatar_eval import face_colour_distance, face_mask, mouth_sync, sync_summary, window_stats
from streamgen.training.data.avatar import build_dataset
from streamgen.training.data.avatar_faces import measure_mouth

from .conftest import avatar_pipeline

SMALL = dict(dim=32, num_heads=2, ffn_dim=64)  # the avatar layout, small enough for the default run


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("avatar_eval")
    build_dataset(root, {"train": 1, "val": 2, "test": 1}, seed=5, identities={"train": 2, "val": 1, "test": 1},
                  progress=False)
    return root


@pytest.fixture(scope="module")
def clips(data):
    from streamgen.training.avatar_evaluate import load_split

    return load_split(data, "val")[1]


def test_ground_truth_frames_sync_and_a_delayed_copy_gives_its_delay(clips):
    real = sync_summary([mouth_sync(c["frames"], c) for c in clips])
    assert real["pearson"] > 0.9 and real["lag_frames"] == 0 and real["mae_px"] == 0.0 and real["clips"] == 2
    late = sync_summary([mouth_sync(np.concatenate([c["frames"][:3], c["frames"][:-3]]), c) for c in clips])
    assert late["lag_frames"] == 3 and late["pearson"] < real["pearson"]


def test_face_colour_distance_reads_a_recolouring_and_not_the_talking(clips):
    c = clips[0]
    mask = face_mask(c["reference"], c["skin"], c["reference_mouth"])
    assert 50 < mask.sum() < 64 * 64 // 4  # the inner face and neck, not the background
    talking = face_colour_distance(c["frames"], c["reference"], mask)
    assert talking.max() < 1.0  # mouth, blinks and head sway leave the inner skin as it is
    shifted = np.clip(c["frames"].astype(np.int16) - 20, 0, 255).astype(np.uint8)
    assert face_colour_distance(shifted, c["reference"], mask).mean() == pytest.approx(20 * np.sqrt(3), abs=1.5)
    with pytest.raises(ValueError, match="well inside the skin colour"):
        face_mask(np.zeros((64, 64, 3), np.uint8), c["skin"], c["reference_mouth"])


def test_window_stats_see_a_frozen_stream_and_the_mouth(clips):
    c = clips[0]
    mask = face_mask(c["reference"], c["skin"], c["reference_mouth"])
    frames = np.concatenate([c["frames"]] * 4)  # [4T, 64, 64, 3]
    truth = np.concatenate([c["mouth_open"]] * 4)
    mouth = measure_mouth(frames, np.concatenate([c["mouth_centre"]] * 4), c["reference"], c["reference_mouth"])
    rows = window_stats(frames, c["reference"], mask, mouth, truth, window=40)
    assert len(rows) == len(frames) // 40 and all(r["change"] > 0.1 and r["mouth_pearson"] > 0.8 for r in rows)
    frozen = window_stats(np.repeat(c["reference"][None], 80, 0), c["reference"], mask, None, None, window=40)
    assert all(r["change"] == 0 and r["face_distance"] == 0 and "mouth_pearson" not in r for r in frozen)


def test_evaluate_streams_the_clips_and_compares_a_teacher(data):
    from streamgen.training.avatar_evaluate import evaluate_avatar, load_split, teacher_clip

    pipe = avatar_pipeline(**SMALL)
    out = evaluate_avatar(pipe, data, clips=1, frames=200, teacher=pipe.model, teacher_steps=2, progress=False)
    assert out["clips"] == 1 and out["split"] == "val" and out["sync"]["clips"] == 1
    assert out["sync"]["lag_latent_frames"] == out["sync"]["lag_frames"] / 2
    assert np.isfinite(out["psnr"]["mean"]) and np.isfinite(out["teacher"]["psnr"])
    assert out["teacher"]["student_minus_teacher_psnr"] == pytest.approx(out["psnr"]["mean"] - out["teacher"]["psnr"])
    long = out["long"]
    assert long["frames"] == 200 and len(long["windows"]) == 2
    assert long["identity_ok"] == (long["identity_worst_window_5000"] <= long["identity_bound"])
    json.dumps(out)  # the CLI prints it
    clip = load_split(data, "val", clips=1)[1][0]
    a = teacher_clip(pipe.model, pipe.decoder, clip, steps=2, seed=1)
    assert a.shape == (28, 64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, teacher_clip(pipe.model, pipe.decoder, clip, steps=2, seed=1))


def test_shipped_avatar_folder_starts_with_a_training_identity(data, tmp_path):
    import streamgen
    from streamgen.checkpoints.io import save_checkpoint
    from streamgen.training.ship_avatar import identity_references, write_avatar_folder

    pipe = avatar_pipeline(**SMALL)
    weights = save_checkpoint(tmp_path / "w", pipe.config, pipe.model)
    ae = tmp_path / "ae"
    ae.mkdir()
    pipe.decoder.ae.save(ae / "video_ae.safetensors")
    folder = write_avatar_folder(tmp_path / "avatar", weights, ae, data, identity=1)
    refs = np.load(folder / "references.npz")["images"]
    assert refs.shape == (2, 64, 64, 3) and np.array_equal(refs, identity_references(data))
    loaded = streamgen.load_pipeline(str(folder), device="cpu")
    primed = loaded.start(seed=2)  # primed with the start context: training identity 1 in the sink
    chosen = loaded.start(seed=2, prime=False)
    chosen.set_reference(refs[1])
    assert np.array_equal(primed.step().video, chosen.step().video)
    with pytest.raises(ValueError, match="--identity 5"):
        write_avatar_folder(tmp_path / "bad", weights, ae, data, identity=5)


def test_cli_refuses_a_missing_set_in_one_line(data, tmp_path, capsys):
    from streamgen.training.evaluate_cli import main

    assert main(["--model", "avatar", "--data", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--data" in err[0] and "streamgen.training.data.avatar" in err[0]
    assert main(["--model", "avatar", "--data", str(data), "--frames", "-1"]) == 2
    assert "--frames -1" in capsys.readouterr().err


def test_bench_quotes_the_speech_latency_of_an_avatar():
    from streamgen.cli.bench import run_bench

    pipe = avatar_pipeline(**SMALL)
    out = run_bench(pipe, blocks=3, warmup=1)
    lat, cfg = out["speech_latency"], pipe.config
    frame_s = float(cfg.block_seconds) / (cfg.frames_per_block * cfg.temporal_upsample)
    assert lat["compute_s"] == pytest.approx(out["block_ms_p50"] / 1000)
    assert lat["lookahead_s"] == pytest.approx(cfg.audio_in.radius * cfg.temporal_upsample * frame_s)
    assert lat["min_s"] == pytest.approx(lat["lookahead_s"] + lat["compute_s"])
    assert lat["max_s"] - lat["min_s"] == pytest.approx(float(cfg.block_seconds) - frame_s)
    assert lat["min_s"] < lat["mean_s"] < lat["max_s"]
