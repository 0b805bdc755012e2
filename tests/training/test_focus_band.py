"""``regression.focus_weight`` / ``focus_cols``: extra loss weight on the latent columns of the controlled
object's band (``losses.column_band_weights``), so a paddle that should hold still is weighed as much as one
that moves; the weighted loss is exact, the band is the cells that overlap it, bad bands name the value."""
from __future__ import annotations

import pytest
import torch

from streamgen.training.config import RegressionConfig
from streamgen.training.losses import column_band_weights, rollout_regression_loss


def test_the_band_weighs_the_cells_that_overlap_it():
    w = column_band_weights(16, (0.85, 0.925), 4.0)
    assert w.shape == (1, 1, 1, 1, 16)
    # cells 13 = [0.8125, 0.875) and 14 = [0.875, 0.9375) overlap [0.85, 0.925); 12 and 15 do not
    want = torch.ones(16)
    want[13:15] = 5.0
    torch.testing.assert_close(w.flatten(), want, rtol=0, atol=0)
    torch.testing.assert_close(column_band_weights(4, (0.0, 1.0), 2.0).flatten(), torch.full((4,), 3.0), rtol=0, atol=0)


@pytest.mark.parametrize("cols", [(0.5, 0.5), (0.9, 0.1), (-0.1, 0.5), (0.5, 1.5)])
def test_a_bad_band_names_itself(cols):
    with pytest.raises(ValueError, match="column band"):
        column_band_weights(16, cols, 1.0)


def test_the_weighted_loss_is_exact_and_leaves_audio_alone():
    g = torch.Generator().manual_seed(0)
    real = {"latents": torch.randn(2, 3, 4, 8, 8, generator=g), "audio": torch.randn(2, 6, 16, generator=g)}
    gen = {k: v + 0.3 * torch.randn(v.shape, generator=g) for k, v in real.items()}
    err = (gen["latents"] - real["latents"]) ** 2  # [B, F, C, H, W]
    w = torch.ones(8)
    w[6] = 11.0  # cell 6 = [0.75, 0.875) overlaps [0.8, 0.85); cell 7 = [0.875, 1) does not
    want_video = float((err * w).mean() / w.mean())
    want_audio = float(((gen["audio"] - real["audio"]) ** 2).mean())
    got = rollout_regression_loss(gen, real, audio_weight=0.5, focus_cols=(0.8, 0.85), focus_weight=10.0)
    assert float(got) == pytest.approx(want_video + 0.5 * want_audio, rel=1e-6)
    # no weight (or no band) is the plain loss
    plain = float(((gen["latents"] - real["latents"]) ** 2).mean()) + 0.5 * want_audio
    assert float(rollout_regression_loss(gen, real, audio_weight=0.5, focus_cols=(0.8, 0.85))) == pytest.approx(plain, rel=1e-6)


def test_an_error_in_the_band_costs_more_than_the_same_error_outside():
    real = {"latents": torch.zeros(1, 2, 4, 8, 8)}
    inside = {"latents": real["latents"].clone()}
    inside["latents"][..., 7] = 1.0
    outside = {"latents": real["latents"].clone()}
    outside["latents"][..., 0] = 1.0
    kw = dict(focus_cols=(0.9, 1.0), focus_weight=8.0)
    assert float(rollout_regression_loss(inside, real, **kw)) > 4 * float(rollout_regression_loss(outside, real, **kw))
    # with motion weights on as well, the band still adds its weight where nothing moves
    assert float(rollout_regression_loss(inside, real, motion_weight=3.0, **kw)) > float(
        rollout_regression_loss(inside, real, motion_weight=3.0))


def test_the_config_checks_the_band():
    assert RegressionConfig(focus_weight=4.0, focus_cols=[0.85, 0.925]).focus_cols == (0.85, 0.925)
    with pytest.raises(ValueError, match="focus_weight=4.0 needs focus_cols"):
        RegressionConfig(focus_weight=4.0)
    with pytest.raises(ValueError, match=r"focus_cols=\(0.9, 0.1\)"):
        RegressionConfig(focus_cols=[0.9, 0.1])
    with pytest.raises(ValueError, match="focus_weight=-1"):
        RegressionConfig(focus_weight=-1.0, focus_cols=[0.1, 0.2])


def test_a_run_with_the_band_trains_and_weighs_it(tmp_path):
    from streamgen.training.trainer import Trainer

    from .helpers import tiny_config

    base = ["model=tiny-world", "regression.context_blocks=1"]
    trainer = Trainer(tiny_config("rollout_regression", steps=2, extra=base + ["regression.focus_weight=8",
                                                                           "regression.focus_cols=[0.5,1.0]"]),
                      tmp_path / "a", progress=False)
    batch = trainer.batch(0)
    trainer.generators["local"].manual_seed(5)
    generated, target = trainer.objective.rollout(batch, 2, grad=False)
    reg = trainer.config.regression
    weighted = rollout_regression_loss(generated, target, focus_cols=reg.focus_cols, focus_weight=reg.focus_weight)
    assert float(weighted) != pytest.approx(float(rollout_regression_loss(generated, target)), rel=1e-4)
    trainer.train()
    assert trainer.step == 2
    assert all(torch.isfinite(p).all() for p in trainer.trainable["student"].parameters())


def test_the_audio_change_weight_weighs_a_beep_more_than_silence():
    real = {"latents": torch.zeros(1, 2, 4, 8, 8), "audio": torch.zeros(1, 8, 4)}
    real["audio"][:, 3:5] = 2.0  # a beep: latent frames 3-4
    gen = {"latents": real["latents"].clone(), "audio": real["audio"].clone()}
    gen["audio"][:, 3] = 0.0  # the beep's onset missed
    quiet = {"latents": real["latents"].clone(), "audio": real["audio"].clone()}
    quiet["audio"][:, 0] = 2.0  # the same error in the silence before it
    kw = dict(audio_weight=1.0, audio_change_weight=5.0)
    # plain: the two errors cost the same; change-weighted: the missed onset costs more
    assert float(rollout_regression_loss(gen, real, audio_weight=1.0)) == pytest.approx(
        float(rollout_regression_loss(quiet, real, audio_weight=1.0)))
    assert float(rollout_regression_loss(gen, real, **kw)) > 2 * float(rollout_regression_loss(quiet, real, **kw))
    # the weights are motion_weights of the real audio, exactly
    from streamgen.training.losses import motion_weights, weighted_mse

    want = weighted_mse(gen["audio"], real["audio"], motion_weights(real["audio"], 5.0))
    assert float(rollout_regression_loss(gen, real, **kw)) == pytest.approx(float(want), rel=1e-6)
    with pytest.raises(ValueError, match="audio_change_weight=-1"):
        RegressionConfig(audio_change_weight=-1.0)
