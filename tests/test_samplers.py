import pytest
import torch

from streamgen.samplers import (
    add_noise,
    classifier_free_guidance,
    euler_step,
    euler_timesteps,
    predict_x0,
    warped_timesteps,
    x0_and_renoise,
)


def test_shift_5_warps_the_four_nominal_steps():
    assert warped_timesteps((1000, 750, 500, 250), 5.0) == pytest.approx((1000.0, 937.5, 833.333333, 625.0))


def test_noise_then_predict_x0_round_trips_with_the_true_velocity():
    x0, eps = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    for t in (0.0, 250.0, 937.5, 1000.0):
        xt = add_noise(x0, eps, t)
        torch.testing.assert_close(predict_x0(xt, eps - x0, t), x0, atol=1e-5, rtol=0)


def test_per_frame_timesteps_broadcast():
    x0, eps = torch.randn(1, 2, 3, 4, 4), torch.randn(1, 2, 3, 4, 4)
    t = torch.tensor([[0.0, 1000.0]])
    xt = add_noise(x0, eps, t)
    torch.testing.assert_close(xt[:, 0], x0[:, 0])
    torch.testing.assert_close(xt[:, 1], eps[:, 1])


def test_renoise_uses_fresh_noise_at_the_next_level():
    x0, eps, fresh = torch.randn(4, 4), torch.randn(4, 4), torch.randn(4, 4)
    xt = add_noise(x0, eps, 937.5)
    pred, nxt = x0_and_renoise(xt, eps - x0, 937.5, 625.0, fresh)
    torch.testing.assert_close(pred, x0, atol=1e-5, rtol=0)
    torch.testing.assert_close(nxt, add_noise(x0, fresh, 625.0), atol=1e-5, rtol=0)


def test_euler_with_exact_velocity_lands_on_x0():
    x0, eps = torch.randn(8), torch.randn(8)
    ts = euler_timesteps(10, 5.0)
    assert ts[0] == 1000.0 and ts[-1] == 0.0 and all(a > b for a, b in zip(ts, ts[1:]))
    x = add_noise(x0, eps, ts[0])
    for t, tn in zip(ts, ts[1:]):
        x = euler_step(x, eps - x0, t, tn)
    torch.testing.assert_close(x, x0, atol=1e-5, rtol=0)


def test_cfg_formula():
    c, u = torch.tensor([2.0]), torch.tensor([1.0])
    assert classifier_free_guidance(c, u, 3.0).item() == pytest.approx(4.0)  # cond + 2 * (cond - uncond)
