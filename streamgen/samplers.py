"""Flow-matching samplers as pure functions of ``(x, prediction, t, t_next)``.

Convention (Wan / rectified flow): ``x_t = (1 - sigma) * x0 + sigma * noise`` with
``sigma = t / num_train_timesteps``; the model predicts the velocity ``v = noise - x0``.
Timesteps are on the 0..1000 scale and may be fractional (937.5).

Note: the reference Self-Forcing scheduler (sigma_min 0, extra step) maps "t = 0" to sigma ~0.005;
here t = 0 means sigma = 0 exactly, so the clean refill at ``context_noise = 0`` sees the clean latent.
"""
from __future__ import annotations

import torch

NUM_TRAIN_TIMESTEPS = 1000.0


def shift_sigma(sigma, shift: float):
    """Shifted schedule ``shift * s / (1 + (shift - 1) * s)`` (works on floats and tensors)."""
    return shift * sigma / (1 + (shift - 1) * sigma)


def warped_timesteps(nominal: tuple[float, ...], shift: float, num_train: float = NUM_TRAIN_TIMESTEPS) -> tuple[float, ...]:
    """Few-step list: nominal 1000/750/500/250 with shift 5 become 1000/937.5/833.3/625."""
    return tuple(float(num_train * shift_sigma(t / num_train, shift)) for t in nominal)


def euler_timesteps(num_steps: int, shift: float, num_train: float = NUM_TRAIN_TIMESTEPS) -> tuple[float, ...]:
    """``num_steps + 1`` timesteps from 1000 down to 0 on the shifted schedule (teacher sampling)."""
    sigmas = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)
    return tuple(float(num_train * shift_sigma(s, shift)) for s in sigmas)


def _sigma(t, x: torch.Tensor, num_train: float) -> torch.Tensor:
    """Timestep (float or ``[B, F]`` tensor) as a sigma broadcastable to ``x [B, F, ...]``."""
    s = torch.as_tensor(t, dtype=torch.float32, device=x.device) / num_train
    while s.dim() and s.dim() < x.dim():
        s = s.unsqueeze(-1)
    return s.to(x.dtype)


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t, num_train: float = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    s = _sigma(t, x0, num_train)
    return (1 - s) * x0 + s * noise


def predict_x0(x_t: torch.Tensor, velocity: torch.Tensor, t, num_train: float = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    return x_t - _sigma(t, x_t, num_train) * velocity


def x0_and_renoise(
    x_t: torch.Tensor, velocity: torch.Tensor, t, t_next, noise: torch.Tensor, num_train: float = NUM_TRAIN_TIMESTEPS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Few-step update: predict x0, then re-noise it to ``t_next`` with fresh ``noise``."""
    x0 = predict_x0(x_t, velocity, t, num_train)
    return x0, add_noise(x0, noise, t_next, num_train)


def euler_step(x_t: torch.Tensor, velocity: torch.Tensor, t, t_next, num_train: float = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """Deterministic flow ODE step from t to t_next."""
    return x_t + (_sigma(t_next, x_t, num_train) - _sigma(t, x_t, num_train)) * velocity


def classifier_free_guidance(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """``cond + (scale - 1) * (cond - uncond)``, i.e. ``uncond + scale * (cond - uncond)``."""
    return uncond + scale * (cond - uncond)
