"""The pixel-free dynamics table behind `streamgen evaluate`'s ``paddle_reference``: fitted on tracks with a
known rule it reproduces them exactly; it clips to the range seen, holds the last step for unseen keys and
the last position over missing ones; on real recorded Pong it predicts the paddle better than holding it."""
from __future__ import annotations

import numpy as np
import pytest

from streamgen.training.data.atari import build_dataset
from streamgen.training.data.games import game_spec
from streamgen.training.data.locate import locate_many
from streamgen.training.evaluate import load_episodes, reference_table
from streamgen.training.paddle_reference import commanded_signs, fit_dynamics_table, predict_track


def _rule_track(signs: np.ndarray, start: float = 30.0) -> np.ndarray:
    """A toy paddle with momentum: next step = last step / 2 + 3 * the command two actions back, in [0, 60]."""
    y = [start, start]
    for t in range(1, len(signs)):
        y.append(float(np.clip(y[t] + round((y[t] - y[t - 1]) / 2) + 3 * signs[t - 1], 0.0, 60.0)))
    return np.asarray(y[: len(signs)])


def test_table_reproduces_a_deterministic_rule():
    rng = np.random.default_rng(0)
    signs = [rng.choice([-1, 0, 1], size=400) for _ in range(6)]
    tracks = [_rule_track(u) for u in signs]
    table = fit_dynamics_table(tracks[:5], signs[:5], [np.zeros(400, bool)] * 5, history=2)
    assert table.low == 0.0 and table.high == 60.0
    y, u = tracks[5], signs[5]
    for c in (10, 100, 250):  # rolled out from a real context under the same commands, 64 steps
        pred = predict_track(table, y[:c], u[: c + 63], 64)
        assert pred.shape == (64,)
        np.testing.assert_allclose(pred, y[c : c + 64])


def test_unseen_keys_hold_the_last_step_and_positions_clip():
    table = fit_dynamics_table([np.array([10.0, 10.0, 12.0, 14.0])], [np.array([1, 1, 1, 1])],
                               [np.zeros(4, bool)], history=1)
    assert table.steps == {(0, 1): 2.0, (2, 1): 2.0}
    # Commands never seen (-1): the last step (+2) continues; the range seen (10..14) caps the track.
    pred = predict_track(table, np.array([9.0, 11.0]), np.array([-1, -1, -1, -1]), 3)
    np.testing.assert_allclose(pred, [13.0, 14.0, 14.0])
    # A missing position in the context holds the last found one: a still paddle told +1 steps by 2.
    pred = predict_track(table, np.array([12.0, np.nan]), np.array([1, 1]), 1)
    np.testing.assert_allclose(pred, [14.0])


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="history"):
        fit_dynamics_table([np.zeros(5)], [np.zeros(5, int)], [np.zeros(5, bool)], history=0)
    with pytest.raises(ValueError, match="no usable steps"):
        fit_dynamics_table([np.full(5, np.nan)], [np.zeros(5, int)], [np.zeros(5, bool)])
    table = fit_dynamics_table([np.arange(6.0)], [np.ones(6, int)], [np.zeros(6, bool)])
    with pytest.raises(ValueError, match="shorter than the table's history 3"):
        predict_track(table, np.zeros(2), np.zeros(10, int), 2)
    with pytest.raises(ValueError, match="commanded signs"):
        predict_track(table, np.zeros(4), np.zeros(4, int), 2)


def test_commanded_signs_follow_the_game_spec():
    spec = game_spec("pong")
    names = ["NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE"]
    np.testing.assert_array_equal(commanded_signs(spec, names, np.arange(6)), [0, 0, -1, 1, -1, 1])


def test_on_recorded_pong_the_table_beats_holding_the_paddle(tmp_path):
    data = build_dataset("pong", tmp_path / "pong", episodes=2, steps_per_episode=300, seed=3, eval_episodes=1,
                         progress=False)
    meta, eps = load_episodes(data, "eval")
    table = reference_table(data, meta, episodes=2)
    spec = game_spec("pong")
    y = locate_many(eps[0]["frames"], spec.player)[:, 0]
    u = commanded_signs(spec, meta["action_names"], eps[0]["actions"])
    ok = [(s, s + 4) for s in range(20, 280, 4) if not eps[0]["first"][s - 4 : s + 6].any() and not np.isnan(y[s - 4 : s + 4]).any()]
    ref = np.concatenate([np.abs(predict_track(table, y[s - 4 : s], u[s - 4 : e - 1], 4) - y[s:e]) for s, e in ok])
    hold = np.concatenate([np.abs(y[s - 1] - y[s:e]) for s, e in ok])
    assert len(ok) > 20
    assert np.median(ref) < np.median(hold)


def test_a_phased_table_keys_on_the_phase_and_falls_back_to_the_phaseless_entry():
    # One game: pressing moves the paddle 4 px a step in phase 1 and 2 px in phase 0 (two episodes).
    signs = np.array([0, 0, 0, 1, 1, 1, 1, 1, 0, 0])
    first = np.zeros(10, bool)
    first[0] = True
    fast = np.cumsum([0, 0, 0, 0, 4, 4, 4, 4, 4, 0]).astype(float)
    slow = np.cumsum([0, 0, 0, 0, 2, 2, 2, 2, 2, 0]).astype(float)
    table = fit_dynamics_table([fast, slow], [signs, signs], [first, first], phases=[np.ones(10, int), np.zeros(10, int)])
    assert table.phased
    ctx, u = np.zeros(4), np.array([0, 0, 0, 1, 1])
    assert predict_track(table, ctx, u, 2, phase=1)[0] == 4.0 and predict_track(table, ctx, u, 2, phase=0)[0] == 2.0
    assert predict_track(table, ctx, u, 2, phase=-1)[0] == 3.0  # unknown phase: the median over both
