"""ODE initialisation: teacher trajectories at the student's timesteps, and the regression of the
causal student onto their endpoints.

The teacher integrates the flow ODE with Euler steps and CFG on a grid that contains every student
timestep (the warped few-step list, e.g. 1000/937.5/833.3/625) exactly, so the stored states are the
inputs the student sees at inference (the public scripts store 1000/960/889/727 for shift-5 students,
a known mismatch). A bidirectional teacher denoises the whole clip; a causal (teacher-forcing) teacher
generates block by block over its KV cache, with a separate cache for the unconditional branch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from streamgen.models.masks import block_causal_mask, expand_to_tokens
from streamgen.samplers import euler_step, predict_x0
from streamgen.training.conditioning import Cond, frame_timesteps, velocity, velocity_cached
from streamgen.training.losses import guided
from streamgen.training.rollout import TrainingKVCache


def _unshift(t: float, shift: float) -> float:
    s = t / 1000.0
    return s / (shift - (shift - 1) * s)  # inverse of shift_sigma


def euler_grid(student_steps: tuple[float, ...], substeps: int, shift: float) -> tuple[list[float], list[int]]:
    """Teacher timesteps from ``student_steps[0]`` to 0 with ``substeps`` Euler steps per student
    interval (uniform in the unshifted sigma), and the grid index of each student timestep."""
    ends = list(student_steps) + [0.0]
    grid, marks = [], []
    for a, b in zip(ends[:-1], ends[1:]):
        marks.append(len(grid))
        ua, ub = _unshift(a, shift), _unshift(b, shift)
        for j in range(substeps):
            u = ua + (ub - ua) * j / substeps
            grid.append(a if j == 0 else 1000.0 * shift * u / (1 + (shift - 1) * u))
    grid.append(0.0)
    return grid, marks


def _guided_v(model, x, t, cond, uncond, scale, cache=None, cache_u=None, start=0):
    if cache is None:
        vc = velocity(model, x, t, cond)
        return vc if scale == 1 else guided(vc, velocity(model, x, t, uncond), scale)
    vc = velocity_cached(model, x, t, cond, cache, start)
    return vc if scale == 1 else guided(vc, velocity_cached(model, x, t, uncond, cache_u, start), scale)


@torch.no_grad()
def teacher_trajectory(
    teacher, noise: torch.Tensor, cond: Cond, uncond: Cond, *, student_steps: tuple[float, ...],
    substeps: int, scale: float, shift: float, causal: bool = False,
) -> torch.Tensor:
    """``[S + 1, B, F, C, H, W]``: the states at the S student timesteps, then the endpoint x0."""
    grid, marks = euler_grid(student_steps, substeps, shift)
    b, f = noise.shape[:2]
    if not causal:
        return _integrate(teacher, noise, cond, uncond, grid, marks, scale)
    cfg, n = teacher.config, teacher.config.frames_per_block
    param = next(teacher.parameters())
    caches = [TrainingKVCache(cfg, batch=b, dtype=param.dtype, device=param.device) for _ in range(2)]
    blocks = []
    for start in range(0, f, n):
        traj = _integrate(teacher, noise[:, start : start + n], cond, uncond, grid, marks, scale, caches, start)
        blocks.append(traj)
        clean = traj[-1]
        t_ctx = frame_timesteps(cfg.context_noise, b, clean.shape[1], clean.device)
        velocity_cached(teacher, clean, t_ctx, cond, caches[0], start)
        if scale != 1:
            velocity_cached(teacher, clean, t_ctx, uncond, caches[1], start)
    return torch.cat(blocks, dim=2)  # [S+1, B, F, C, H, W]


def _integrate(model, x, cond, uncond, grid, marks, scale, caches=None, start=0) -> torch.Tensor:
    b, f = x.shape[:2]
    states = []
    for i, (t, t_next) in enumerate(zip(grid[:-1], grid[1:])):
        if i in marks:
            states.append(x)
        t_frames = frame_timesteps(t, b, f, x.device)  # [B, F]
        c, cu = (caches or (None, None))
        v = _guided_v(model, x, t_frames, cond, uncond, scale, c, cu, start)
        x = euler_step(x, v, t, t_next)
    states.append(x)
    return torch.stack(states)  # [S+1, B, F, C, H, W]


def student_mask(config, num_frames: int, device) -> torch.Tensor:
    """The block-causal token mask of the student, restricted to its inference window and sink."""
    frames = block_causal_mask(num_frames, config.frames_per_block, window=config.window_frames, sink=config.sink_frames)
    return expand_to_tokens(frames, config.tokens_per_frame).to(device)  # [F*T, F*T]


def ode_regression_loss(
    student, trajectory: torch.Tensor, cond: Cond, *, student_steps: tuple[float, ...], generator: torch.Generator
) -> torch.Tensor:
    """Each block of each sample at its own random student step; regress the x0 prediction (under the
    block-causal mask) onto the trajectory's endpoint."""
    s1, b, f = trajectory.shape[:3]
    cfg = student.config
    n = cfg.frames_per_block
    idx_block = torch.randint(s1 - 1, (b, f // n), generator=generator)  # [B, blocks]
    idx = idx_block.repeat_interleave(n, dim=1).to(trajectory.device)  # [B, F]
    gather = idx[None, :, :, None, None, None].expand(1, b, f, *trajectory.shape[3:])  # [1, B, F, C, H, W]
    x_in = trajectory.gather(0, gather)[0]  # [B, F, C, H, W]
    steps = torch.tensor(student_steps, dtype=torch.float32, device=trajectory.device)
    t = steps[idx]  # [B, F]
    v = velocity(student, x_in, t, cond, mask=student_mask(cfg, f, x_in.device))
    return F.mse_loss(predict_x0(x_in, v, t).float(), trajectory[-1].float())
