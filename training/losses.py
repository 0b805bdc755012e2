"""Losses: flow matching, the DMD gradient and its surrogate loss, real (teacher + CFG) and fake
(critic) scores, and the critic's denoising loss, over every generated stream of the model (``modalities.py``).

Convention (``streamgen.samplers``): ``x_t = (1 - s) x0 + s eps`` with ``s = t / 1000``; models predict the
velocity ``eps - x0``; ``x0 = x_t - s v``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from streamgen.samplers import add_noise, classifier_free_guidance, predict_x0, shift_sigma
from streamgen.training.conditioning import Cond, frame_timesteps
from streamgen.training.modalities import VIDEO, predict, predict_teacher_forcing, stream_t
from streamgen.training.teacher_record import BIDIRECTIONAL, TEACHER_FORCING, training_mask


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """MSE computed in fp32, optionally weighted per element (``weight`` broadcasts against ``target``; the
    weighted mean is divided by the mean weight, so the loss keeps its scale)."""
    err = (pred.float() - target.float()) ** 2
    if weight is None:
        return err.mean()
    weight = weight.float().expand_as(err)
    return (err * weight).mean() / weight.mean()


def flow_matching_loss(pred_velocity: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor,
                       weight: torch.Tensor | None = None) -> torch.Tensor:
    """MSE between the predicted velocity and the flow target ``noise - x0`` (``weighted_mse``)."""
    return weighted_mse(pred_velocity, noise.float() - x0.float(), weight)


def motion_weights(video: torch.Tensor, strength: float, cap: float = 10.0) -> torch.Tensor:
    """Per-cell loss weights ``[B, F, 1, H, W]`` from clean latents ``[B, F, C, H, W]``: ``1 + strength * m``
    where ``m`` is the cell's change from the previous latent frame (summed over channels) relative to the
    batch mean, capped at ``cap``; the first frame of a clip takes its change to the second. Small moving
    objects (a paddle, a ball) fill a few cells of a static field, so an unweighted MSE barely sees where
    they go; this puts the loss where the picture moves."""
    if video.shape[1] < 2:
        return torch.ones_like(video[:, :, :1])
    change = (video[:, 1:] - video[:, :-1]).abs().sum(dim=2, keepdim=True)  # [B, F-1, 1, H, W]
    change = torch.cat([change[:, :1], change], dim=1)  # [B, F, 1, H, W]
    rel = (change / change.mean().clamp_min(1e-8)).clamp(max=cap)
    return 1.0 + strength * rel


def _stream_weights(name: str, clean: torch.Tensor, motion_weight: float) -> torch.Tensor | None:
    """``motion_weights`` of a clean video stream when ``motion_weight > 0``; None (plain MSE) otherwise."""
    return motion_weights(clean.detach(), motion_weight) if (name == VIDEO and motion_weight > 0) else None


def streams_flow_loss(pred: dict, x0: dict, noise: dict, *, motion_weight: float = 0.0) -> torch.Tensor:
    """Flow matching summed over the generated streams (each stream's MSE is a mean, so a sparse audio
    stream weighs as much as the video); ``motion_weight > 0`` weights the video by ``motion_weights``."""
    return sum(flow_matching_loss(pred[k], x0[k], noise[k], _stream_weights(k, x0[k], motion_weight)) for k in x0)


def column_band_weights(width: int, cols: tuple[float, float], strength: float) -> torch.Tensor:
    """Per-column loss weights ``[1, 1, 1, 1, width]``: ``1 + strength`` on the latent columns whose cells
    overlap the band ``cols`` (fractions of the frame's width, ``lo < hi``), 1 elsewhere. The band of a
    game's controlled object (``GameSpec.player.cols``) weighs where it is whether it moves or holds still,
    which ``motion_weights`` alone does not: a paddle that should stay put gets no motion weight."""
    lo, hi = (float(c) for c in cols)
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"column band {cols!r} must be fractions 0 <= lo < hi <= 1")
    edges = torch.arange(width + 1, dtype=torch.float32) / width  # [W + 1] cell edges
    inside = (edges[1:] > lo) & (edges[:-1] < hi)  # [W] cells overlapping the band
    return (1.0 + strength * inside.float()).view(1, 1, 1, 1, width)  # [W] -> [1, 1, 1, 1, W]


def rollout_regression_loss(generated: dict, real: dict, *, motion_weight: float = 0.0, audio_weight: float = 1.0,
                            focus_cols: tuple[float, float] | None = None, focus_weight: float = 0.0,
                            audio_change_weight: float = 0.0) -> torch.Tensor:
    """Generated streams against the real clip's same frames: each stream's mean squared error, the audio's
    times ``audio_weight``; ``motion_weight > 0`` weights the video by ``motion_weights`` of the real frames;
    ``focus_weight > 0`` adds ``focus_weight`` to the weight of the video's latent columns in ``focus_cols``
    (``column_band_weights``); ``audio_change_weight > 0`` weights the audio latents ``[B, Fa, Ca]`` the same
    way as ``motion_weights`` does the video (by their change from the previous latent frame), so a beep's
    onset and end weigh more than the silence around them."""
    total = 0.0
    for k, x in generated.items():
        w = _stream_weights(k, real[k], motion_weight)
        if k != VIDEO and audio_change_weight > 0:
            w = motion_weights(real[k].detach(), audio_change_weight)  # [B, Fa, Ca] -> [B, Fa, 1]
        if k == VIDEO and focus_cols and focus_weight > 0:
            band = column_band_weights(x.shape[-1], focus_cols, focus_weight).to(x.device) - 1.0  # [1, 1, 1, 1, W]
            w = (w if w is not None else torch.ones_like(real[k][:, :, :1])) + band
        total = total + weighted_mse(x, real[k], w) * (1.0 if k == VIDEO else audio_weight)
    return total


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
    normaliser = (x - p_real).abs().mean(dim=dims, keepdim=True)  # [B, 1, ...]
    return torch.nan_to_num((p_fake - p_real) / normaliser)


def dmd_loss(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``0.5 * mse(x, (x - grad).detach())`` in float64, whose gradient w.r.t. x is ``grad / x.numel()``."""
    return 0.5 * F.mse_loss(x.double(), (x.double() - grad.double()).detach())


def _x0(xs: dict, v: dict, ts: dict) -> dict:
    return {k: predict_x0(xs[k], v[k], ts[k]) for k in xs}


def teacher_velocity(teacher, x_t: dict, t: torch.Tensor, cond: Cond, *, attention: str = BIDIRECTIONAL,
                     clean: dict | None = None) -> dict:
    """The teacher's velocities through the forward it was trained with (``teacher_record.py``): a
    bidirectional teacher over the whole clip under no mask; a teacher-forcing teacher through
    ``[clean | noisy]`` under its training mask, ``clean`` being the clip's clean frames (the generated
    clip itself, so noisy block i sees the clean blocks before it, as in its training)."""
    mask = training_mask(attention, teacher.config, x_t[VIDEO].shape[1], x_t[VIDEO].device)
    if attention == TEACHER_FORCING:
        if clean is None:
            raise ValueError("a teacher-forcing teacher's score needs the clean clip (clean=None)")
        return predict_teacher_forcing(teacher, clean, x_t, t, cond, mask)
    return predict(teacher, x_t, t, cond, mask=mask)


@torch.no_grad()
def real_score_x0(teacher, xs: dict, t: torch.Tensor, cond: Cond, uncond: Cond, scale: float, *,
                  attention: str = BIDIRECTIONAL, clean: dict | None = None) -> dict:
    """Frozen teacher's x0 prediction of every stream with classifier-free guidance
    ``x_uncond + scale (x_cond - x_uncond)`` (``uncond``: the text, and the actions when guiding by them,
    dropped), through the forward the teacher was trained with (``teacher_velocity``)."""
    v = teacher_velocity(teacher, xs, t, cond, attention=attention, clean=clean)
    if scale != 1:
        vu = teacher_velocity(teacher, xs, t, uncond, attention=attention, clean=clean)
        v = {k: guided(v[k], vu[k], scale) for k in v}
    return _x0(xs, v, stream_t(teacher.config, t))


def fake_score_x0(critic, xs: dict, t: torch.Tensor, cond: Cond) -> dict:
    """The critic's conditional x0 prediction (SF: fake guidance 0, i.e. no CFG)."""
    return _x0(xs, predict(critic, xs, t, cond), stream_t(critic.config, t))


def _noised(xs: dict, t: torch.Tensor, config, generator: torch.Generator) -> tuple[dict, dict]:
    noise = {k: torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device) for k, x in xs.items()}
    ts = stream_t(config, t)
    return {k: add_noise(xs[k], noise[k], ts[k]) for k in xs}, noise


def _score_t(xs: dict, generator, shift, min_t, max_t) -> torch.Tensor:
    x = xs[VIDEO]
    b, f = x.shape[:2]
    return frame_timesteps(sample_timesteps(b, generator, shift=shift, min_t=min_t, max_t=max_t), b, f, x.device)  # [B, F]


def dmd_generator_loss(
    xs: dict, teacher, critic, cond_real: Cond, uncond_real: Cond, cond_fake: Cond, *,
    scale: float, generator: torch.Generator, shift: float, min_t: float, max_t: float,
    attention: str = BIDIRECTIONAL,
) -> tuple[torch.Tensor, dict]:
    """DMD loss of generated streams ``xs`` (grad flows into them only), summed over the streams, each
    with its own per-sample normaliser; one score timestep per sample, shared by its streams. The real
    score calls the teacher under ``attention`` (its training record), on the detached clip as the clean
    half where it was trained by teacher forcing."""
    t = _score_t(xs, generator, shift, min_t, max_t)
    with torch.no_grad():
        detached = {k: x.detach() for k, x in xs.items()}
        x_t, _ = _noised(detached, t, teacher.config, generator)
        p_real = real_score_x0(teacher, x_t, t, cond_real, uncond_real, scale, attention=attention, clean=detached)
        p_fake = fake_score_x0(critic, x_t, t, cond_fake)
        grads = {k: dmd_gradient(detached[k], p_real[k], p_fake[k]) for k in xs}
    loss = sum(dmd_loss(xs[k], grads[k]) for k in xs)
    stats = {f"dmd_grad_norm_{k}" if k != VIDEO else "dmd_grad_norm": float(g.float().norm()) for k, g in grads.items()}
    return loss, dict(stats, score_t=float(t[:, 0].float().mean()))


def critic_loss(
    xs: dict, critic, cond_fake: Cond, *, generator: torch.Generator, shift: float, min_t: float, max_t: float
) -> torch.Tensor:
    """The fake score's flow-matching loss on (detached) generated streams at a fresh timestep."""
    xs = {k: x.detach() for k, x in xs.items()}
    t = _score_t(xs, generator, shift, min_t, max_t)
    x_t, noise = _noised(xs, t, critic.config, generator)
    return streams_flow_loss(predict(critic, x_t, t, cond_fake), xs, noise)
