"""The synthesised avatar set: deterministic from its seed, held-out voices / texts / identities with val
and test disjoint from train and from each other, and per-frame ground truth that the frames show."""
import json

import numpy as np
import pytest

from streamgen.training.data.avatar import (
    FPS, SPLITS, build_dataset, load_clip, make_clip, split_identities, split_texts, split_voices,
)
from streamgen.training.data.avatar_faces import measure_mouth
from streamgen.training.data.avatar_speech import SAMPLE_RATE, say
from streamgen.training.data.avatar_visemes import mouth_track, viseme

COUNTS = {"train": 3, "val": 2, "test": 2}
IDS = {"train": 2, "val": 1, "test": 1}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("avatar")
    meta = build_dataset(root, COUNTS, seed=7, identities=IDS, progress=False)
    return root, meta


def test_espeak_gives_16k_speech_with_phoneme_timings():
    utt = say("Bob might open the map.", "en-us+m3", 160, 50)
    assert utt.audio.dtype == np.float32 and 0.8 < len(utt.audio) / SAMPLE_RATE < 3.0
    starts = [p[0] for p in utt.phonemes]
    assert starts == sorted(starts) and utt.phonemes[-1][1] == pytest.approx(len(utt.audio) / SAMPLE_RATE)
    names = [p[2] for p in utt.phonemes]
    assert "b" in names and "m" in names and "p" in names  # the lip closures of Bob, might, map
    # lips close on the closures: the mouth track is near 0 inside "b" and open in the vowel after it
    frames = int(np.ceil(len(utt.audio) / SAMPLE_RATE * 100))
    opening, _ = mouth_track(utt.phonemes, frames, 100.0)  # 10 ms frames
    b = next(p for p in utt.phonemes if p[2] == "b")
    vowel = utt.phonemes[names.index("b") + 1]
    assert opening[int((b[0] + b[1]) * 50)] < 0.15 < opening[int((vowel[0] + vowel[1]) * 50)]
    assert viseme("m")[0] == 0.0 and viseme("aI")[0] > 0.8


def test_splits_are_disjoint_and_deduplicated(dataset):
    root, meta = dataset
    voices = split_voices(7)
    texts = split_texts(7, {"train": 200, "val": 50, "test": 50})
    ids = split_identities(7, {"train": 12, "val": 3, "test": 3})
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not set(voices[a]) & set(voices[b])
        assert not set(texts[a]) & set(texts[b])
        assert not {json.dumps(i, sort_keys=True) for i in ids[a]} & {json.dumps(i, sort_keys=True) for i in ids[b]}
    for split in SPLITS:
        assert len(set(texts[split])) == len(texts[split])
        infos = [load_clip(root / split / f"clip_{i:05d}.npz")["info"] for i in range(COUNTS[split])]
        assert all(i["voice"] in meta["voices"][split] for i in infos)
        assert [i["text"] for i in infos] == meta["texts"][split]


def test_a_clip_is_a_pure_function_of_the_seed(dataset):
    root, meta = dataset
    again = make_clip(7, "val", 1, meta["texts"]["val"][1], meta["voices"]["val"], meta["identities"]["val"])
    saved = load_clip(root / "val" / "clip_00001.npz")
    for key in ("frames", "audio", "mouth_open", "eyes", "head", "reference"):
        assert np.array_equal(again[key], saved[key]), key
    with pytest.raises(ValueError, match="other settings"):
        build_dataset(root, COUNTS, seed=8, identities=IDS, progress=False)


def test_ground_truth_is_what_the_frames_show(dataset):
    root, _ = dataset
    for split in SPLITS:
        clip = load_clip(root / split / "clip_00000.npz")
        t = len(clip["frames"])
        assert t % 4 == 0 and clip["audio"].shape == (t * SAMPLE_RATE // FPS,) and clip["audio"].dtype == np.int16
        assert clip["frames"].shape == (t, 64, 64, 3) and clip["reference"].shape == (64, 64, 3)
        measured = measure_mouth(clip["frames"], clip["mouth_centre"], clip["reference"], clip["reference_mouth"])
        truth = clip["mouth_open"]
        assert truth.max() > 2.0  # the mouth opens
        assert np.corrcoef(measured, truth)[0, 1] > 0.9
        assert np.abs(measured - truth).mean() < 0.7  # pixels: anti-aliasing thins openings under a pixel


def test_mouth_sync_scores_real_frames_and_finds_a_shift(dataset):
    from streamgen.training.avatar_eval import mouth_sync

    root, _ = dataset
    clip = load_clip(root / "test" / "clip_00000.npz")
    real = mouth_sync(clip["frames"], clip)
    assert real["pearson"] > 0.9 and real["mae_px"] == 0.0 and real["lag_frames"] == 0
    late = np.concatenate([np.repeat(clip["reference"][None], 2, 0), clip["frames"][:-2]])  # the mouth 2 frames late
    shifted = mouth_sync(late, clip)
    assert shifted["lag_frames"] == 2 and shifted["pearson"] < real["pearson"] and shifted["mae_px"] > 0.3
    still = mouth_sync(np.repeat(clip["reference"][None], len(clip["frames"]), 0), clip)  # a face that never speaks
    assert still["pearson"] < 0.5 and still["mae_px"] > 0.5
