"""Losses: flow matching, the DMD gradient and its surrogate loss, real (teacher + CFG) and fake
(critic) scores, and the critic's denoising loss.

Convention (``streamgen.samplers``): ``x_t = (1 - s) x0 + s eps`` with ``s = t / 1000``; models predict the
velocity ``eps - x0``; ``x0 = x_t - s v``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from streamgen.samplers import add_noise, classifier_free_guidance, predict_x0, shift_sigma
from streamgen.training.conditioning import Cond, frame_timesteps, velocity


def flow_matching_loss(pred_velocity: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """MSE between the predicted velocity and the flow target ``noise - x0`` (computed in fp32)."""
    return F.mse_loss(pred_velocity.float(), (noise - x0).float())


def sample_timesteps(
    n: int, generator: torch.Generator, *, shift: float, min_t: float = 0.0, max_t: float = 1000.0, num_train: float = 1000.0
) -> torch.Tensor:
    """``[n]`` timesteps: uniform ``u``, shifted ``1000 * shift u / (1 + (shift - 1) u)``, clamped to [min_t, max_t]."""
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    return (num_train * shift_sigma(u, shift)).clamp(min_t, max_t).float()


def guided(cond_out: torch.Tensor, uncond_out: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance ``uncond + scale * (cond - uncond)`` (scale 1 = the conditional model)."""
    return classifier_free_guidance(cond_out, uncond_out, scale)


def dmd_gradient(x: torch.Tensor, p_real: torch.Tensor, p_fake: torch.Tensor) -> torch.Tensor:
    """``(p_fake - p_real) / mean|x - p_real|``, the normaliser taken per sample over all other dims."""
    dims = tuple(range(1, x.dim()))
    normaliser = (x - p_real).abs().mean(dim=dims, keepdim=True)  # [B, 1, 1, 1, 1]
    return torch.nan_to_num((p_fake - p_real) / normaliser)


def dmd_loss(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``0.5 * mse(x, (x - grad).detach())`` in float64, whose gradient w.r.t. x is ``grad / x.numel()``."""
    return 0.5 * F.mse_loss(x.double(), (x.double() - grad.double()).detach())


@torch.no_grad()
def real_score_x0(teacher, x_t, t, cond: Cond, uncond: Cond, scale: float) -> torch.Tensor:
    """Frozen teacher's x0 prediction with CFG (bidirectional, whole clip)."""
    v = guided(velocity(teacher, x_t, t, cond), velocity(teacher, x_t, t, uncond), scale) if scale != 1 else velocity(teacher, x_t, t, cond)
    return predict_x0(x_t, v, t)


def fake_score_x0(critic, x_t, t, cond: Cond) -> torch.Tensor:
    """The critic's conditional x0 prediction (SF: fake guidance 0, i.e. no CFG)."""
    return predict_x0(x_t, velocity(critic, x_t, t, cond), t)


def dmd_generator_loss(
    x: torch.Tensor, teacher, critic, cond_real: Cond, uncond_real: Cond, cond_fake: Cond, *,
    scale: float, generator: torch.Generator, shift: float, min_t: float, max_t: float,
) -> tuple[torch.Tensor, dict]:
    """DMD loss of generated latents ``x`` ``[B, F, C, H, W]`` (grad flows into x only)."""
    b, f = x.shape[:2]
    t = frame_timesteps(sample_timesteps(b, generator, shift=shift, min_t=min_t, max_t=max_t), b, f, x.device)  # [B, F]
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    with torch.no_grad():
        x_t = add_noise(x.detach(), noise, t)
        p_real = real_score_x0(teacher, x_t, t, cond_real, uncond_real, scale)
        p_fake = fake_score_x0(critic, x_t, t, cond_fake)
        grad = dmd_gradient(x.detach(), p_real, p_fake)
    loss = dmd_loss(x, grad)
    return loss, {"dmd_grad_norm": float(grad.float().norm()), "score_t": float(t[:, 0].float().mean())}


def critic_loss(
    x: torch.Tensor, critic, cond_fake: Cond, *, generator: torch.Generator, shift: float, min_t: float, max_t: float
) -> torch.Tensor:
    """The fake score's flow-matching loss on (detached) generated latents at a fresh timestep."""
    x = x.detach()
    b, f = x.shape[:2]
    t = frame_timesteps(sample_timesteps(b, generator, shift=shift, min_t=min_t, max_t=max_t), b, f, x.device)  # [B, F]
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    x_t = add_noise(x, noise, t)
    return flow_matching_loss(velocity(critic, x_t, t, cond_fake), x, noise)
