"""The counterfactual evaluation on real ale-py recordings: exact emulator branches, the fixed key distribution,
split de-duplication, the paddle's shape check, the frame-skip phase and the measures' consistency."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from streamgen.pipeline import load_pipeline
from streamgen.training.counterfactual import fit_references, measure_model, splits
from streamgen.training.counterfactual_data import (HOLD_STEPS, dedup, frame_hashes, key_sequence, record_split,
                                                    training_hashes)
from streamgen.training.data.atari import (RecordConfig, build_dataset, episode_seed, make_ale, preprocess,
                                           record_episode, step_frames)
from streamgen.training.data.games import game_spec
from streamgen.training.evaluate import psnr
from streamgen.training.object_shape import calibrate, measure
from streamgen.training.paddle_reference import infer_phases


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cf")
    return build_dataset("pong", root / "pong", episodes=1, steps_per_episode=150, seed=3, eval_episodes=1, progress=False)


def _meta(data):
    return json.loads((data / "meta.json").read_text())


def test_branches_replay_the_exact_state_and_leave_the_recording_unchanged(data):
    meta = _meta(data)
    cfg = RecordConfig(**meta["record"])
    spec = game_spec("pong")
    plain = record_episode(cfg, 60, episode_seed(meta["seed"], "val", 0))
    checked = []

    def replay(ale, legal, t):  # from the clone, the episode's own next actions give its own next frames
        if t not in (5, 30):
            return
        state = ale.cloneState()
        shots = []
        for a in plain["actions"][t : t + 8]:
            step_frames(ale, legal[a], cfg.frame_skip)
            shots.append(preprocess(ale.getScreenRGB(), spec, cfg))
        ale.restoreState(state)
        checked.append(np.array_equal(np.stack(shots), plain["frames"][t + 1 : t + 9]))

    again = record_episode(cfg, 60, episode_seed(meta["seed"], "val", 0), on_frame=replay)
    assert checked == [True, True]
    for k in ("frames", "actions", "ram", "first"):
        assert np.array_equal(again[k], plain[k]), k
    assert not np.array_equal(again["audio"], plain["audio"])  # the sound buffer is not part of the clone
    branches = record_split(meta, "val", 1, 60, context=12, frames=16, per_episode=3)
    assert [b.end for b in branches] == [11, 34, 58][: len(branches)] and len(branches) >= 2  # linspace(11, 58, 3)
    for k in ("frames", "audio", "actions", "first"):  # the primed episode is the unbranched recording
        assert np.array_equal(branches[0].episode_data[k], plain[k])
    # The branch's keys really drove the emulator: its frames differ from the recording's continuation somewhere.
    b = branches[1]
    assert b.frames.shape == (16, 3, 64, 64) and not np.array_equal(b.frames, plain["frames"][b.end + 1 : b.end + 17])


def test_key_sequence_is_seeded_and_has_taps_reversals_and_holds():
    a = key_sequence(np.random.default_rng(7), 400, 2, 3, 0)
    b = key_sequence(np.random.default_rng(7), 400, 2, 3, 0)
    assert np.array_equal(a, b) and set(a.tolist()) == {0, 2, 3} and len(a) == 400
    runs, cur, n = [], a[0], 0
    for x in a:
        if x == cur:
            n += 1
        else:
            runs.append((int(cur), n)); cur, n = x, 1
    pressed = [n for k, n in runs if k]
    assert min(pressed) == 1 and max(pressed) >= max(HOLD_STEPS)  # taps and the longest hold
    assert any(runs[i][0] and runs[i + 1][0] and runs[i][0] != runs[i + 1][0] for i in range(len(runs) - 1))  # reversals


def test_splits_are_deduplicated_against_training_and_each_other(data):
    meta = _meta(data)
    seen = training_hashes(data, meta)
    val, _ = splits(data, "val", episodes=1, steps=120, context=12, frames=16, per_episode=4)
    test, info = splits(data, "test", episodes=1, steps=120, context=12, frames=16, per_episode=4)
    assert info["val_branches"] >= 1 and info["test_branches"] >= 1
    val_frames = {h for b in val for h in frame_hashes(b.frames)}
    scored = lambda b: {h for h, new in zip(frame_hashes(b.frames), b.new) if new}  # noqa: E731
    for b in test:
        assert not scored(b) & (seen | val_frames)
    for b in val:
        assert not scored(b) & seen
    # dedup itself: a repeated frame is not scored; a branch with nothing new is dropped.
    raw = record_split(meta, "val", 1, 120, context=12, frames=16, per_episode=3)
    kept, dropped, repeats = dedup(raw, set(frame_hashes(raw[1].frames[5:6])))
    assert dropped == 0 and not raw[1].new[5] and repeats == sum(int((~b.new).sum()) for b in raw) >= 1
    kept, dropped, _ = dedup(raw, set(frame_hashes(raw[0].frames)))
    assert dropped == 1 and kept == raw[1:]


def test_a_smeared_paddle_fails_the_shape_check_though_its_centroid_is_close(data):
    meta = _meta(data)
    with np.load(data / meta["episodes"]["train"][0]) as e:
        frames = e["frames"].transpose(0, 2, 3, 1)  # [T, 3, H, W] -> [T, H, W, 3]
    spec = game_spec("pong")
    real = measure(frames, spec.player)
    ref = calibrate(real, (real.position > 8) & (real.position < 56))
    i = int(np.nonzero((real.position > 15) & (real.position < 45))[0][0])
    assert real.valid(ref)[i]
    shifted = np.roll(frames[i], 6, axis=0)  # the paddle 6 px lower (the rows wrap, the band stays)
    smear = ((frames[i].astype(np.float32) + shifted) / 2).round().astype(np.uint8)[None]
    s = measure(smear, spec.player)
    assert abs(s.position[0] - (real.position[i] + 3)) <= 1.0  # its centroid lies between the two
    assert not s.valid(ref)[0]


def test_the_inferred_phase_follows_the_emulators_frame_parity():
    spec = game_spec("pong")
    cfg = RecordConfig()
    seen = {}
    for noops in (0, 1, 2, 3):
        ale = make_ale("pong", 0)
        legal = ale.getMinimalActionSet()
        names = [a.name for a in legal]
        for _ in range(noops):
            ale.act(legal[0])
        acts = [0] * 30 + [names.index("RIGHT")] * 3 + [0] * 3
        frames, parity = [], None
        for t, a in enumerate(acts):
            frames.append(preprocess(ale.getScreenRGB(), spec, cfg).transpose(1, 2, 0))  # [3, H, W] -> [H, W, 3]
            if t == 30:
                parity = ale.getEpisodeFrameNumber() % 2
            step_frames(ale, legal[a], cfg.frame_skip)
        track = measure(np.stack(frames), spec.player).position
        signs = np.array([spec.moves.get(names[a], 0) for a in acts])
        phases = infer_phases(track, signs, np.eye(1, len(acts), 0, bool)[0])
        assert phases[30] == -1 and phases[31] in (0, 1)  # known only after the press from rest
        seen.setdefault(parity, set()).add(int(phases[31]))
    assert all(len(v) == 1 for v in seen.values()) and seen[0] != seen[1]


def test_counterfactual_measures_are_consistent(data):
    torch.set_num_threads(1)
    meta = _meta(data)
    branches, _ = splits(data, "val", episodes=1, steps=100, context=12, frames=16, per_episode=2)
    assert branches
    pipe = load_pipeline("world", device="cpu")
    with torch.inference_mode():
        out = measure_model(pipe, branches, meta, context=12, tol=3.0, tables=fit_references(data, meta))
    json.dumps(out)
    pad = out["paddle"]
    assert pad["open"]["frames"] + pad["wall"]["frames"] <= 16 * len(branches)
    for block in (pad["open"], pad["wall"]):
        if block["frames"]:
            shares = list(block["within_by_tolerance"].values())
            assert shares == sorted(shares) and block["within_tolerance"] <= block["shape_valid"]
    assert out["shape_ref"]["emulator_shape_valid_open"] > 0.9  # the emulator's own paddle passes its shape check
    last = branches[0].episode_data["frames"][branches[0].end]  # [3, H, W]
    want = np.mean([psnr(np.repeat(b.episode_data["frames"][b.end][None], 16, 0).transpose(0, 2, 3, 1),
                         b.frames.transpose(0, 2, 3, 1)).mean() for b in branches])
    assert last.shape == (3, 64, 64) and out["old"]["copy_last_psnr_all"] == pytest.approx(want)
    assert 0.0 <= out["ball"]["drawn_share"] <= 1.0 or out["ball"]["frames_shown"] == 0


def test_a_teacher_is_measured_with_its_many_step_sampler_when_asked(data, capsys):
    from streamgen.training.counterfactual import main
    from streamgen.training.evaluate import uniform_steps

    assert main(["--data", str(data), "--denoising-steps", "0"]) == 2
    assert "--denoising-steps 0: must be >= 1" in capsys.readouterr().err
    steps = uniform_steps(12)  # the pipeline's override (warped by the model's shift as its own steps are)
    assert len(steps) == 12 and steps[0] == 1000.0 and steps[-1] == pytest.approx(1000.0 / 12)
    assert list(steps) == sorted(steps, reverse=True)
