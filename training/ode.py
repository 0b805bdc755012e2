"""ODE initialisation: teacher trajectories at the student's timesteps, and the regression of the
causal student onto their endpoints.

The teacher integrates the flow ODE with Euler steps and CFG on a grid that contains every student
timestep (the warped few-step list, e.g. 1000/937.5/833.3/625) exactly, so the stored states are the
inputs the student sees at inference (the public scripts store 1000/960/889/727 for shift-5 students,
a known mismatch). A bidirectional teacher denoises the whole clip; a causal (teacher-forcing) teacher
generates block by block over its KV caches, with separate caches for the unconditional branch.
Every generated stream (video, audio) follows the same grid.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from streamgen.samplers import euler_step, predict_x0
from streamgen.training.conditioning import Cond, frame_timesteps
from streamgen.training.modalities import VIDEO, block_frames, causal_mask, new_caches, predict, predict_cached, stream_t
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


def _guided_v(model, xs, t, cond, uncond, scale, caches=None, start=0) -> dict:
    if caches is None:
        v = predict(model, xs, frame_timesteps(t, xs[VIDEO].shape[0], xs[VIDEO].shape[1], xs[VIDEO].device), cond)
        vu = predict(model, xs, frame_timesteps(t, xs[VIDEO].shape[0], xs[VIDEO].shape[1], xs[VIDEO].device), uncond) if scale != 1 else None
    else:
        v = predict_cached(model, xs, t, cond, caches[0], start)
        vu = predict_cached(model, xs, t, uncond, caches[1], start) if scale != 1 else None
    return v if vu is None else {k: guided(v[k], vu[k], scale) for k in v}


@torch.no_grad()
def teacher_trajectory(
    teacher, noise: dict, cond: Cond, uncond: Cond, *, student_steps: tuple[float, ...],
    substeps: int, scale: float, shift: float, causal: bool = False,
) -> dict[str, torch.Tensor]:
    """Per stream ``[S + 1, B, F, ...]``: the states at the S student timesteps, then the endpoint x0."""
    grid, marks = euler_grid(student_steps, substeps, shift)
    if not causal:
        return _integrate(teacher, noise, cond, uncond, grid, marks, scale)
    cfg = teacher.config
    b, f = noise[VIDEO].shape[:2]
    caches = [new_caches(teacher, b, TrainingKVCache) for _ in range(2)]  # conditional, unconditional
    blocks = []
    for k, start in enumerate(range(0, f, cfg.frames_per_block)):
        part = {s: x[:, k * block_frames(cfg, s) : (k + 1) * block_frames(cfg, s)] for s, x in noise.items()}
        traj = _integrate(teacher, part, cond, uncond, grid, marks, scale, caches, start)
        blocks.append(traj)
        clean = {s: x[-1] for s, x in traj.items()}
        predict_cached(teacher, clean, cfg.context_noise, cond, caches[0], start)
        if scale != 1:
            predict_cached(teacher, clean, cfg.context_noise, uncond, caches[1], start)
    return {s: torch.cat([blk[s] for blk in blocks], dim=2) for s in noise}  # [S+1, B, F_s, ...]


def _integrate(model, xs, cond, uncond, grid, marks, scale, caches=None, start=0) -> dict[str, torch.Tensor]:
    states = []
    for i, (t, t_next) in enumerate(zip(grid[:-1], grid[1:])):
        if i in marks:
            states.append(xs)
        v = _guided_v(model, xs, t, cond, uncond, scale, caches, start)
        xs = {k: euler_step(x, v[k], t, t_next) for k, x in xs.items()}
    states.append(xs)
    return {k: torch.stack([st[k] for st in states]) for k in xs}  # [S+1, B, F, ...]


def ode_regression_loss(
    student, trajectory: dict, cond: Cond, *, student_steps: tuple[float, ...], generator: torch.Generator
) -> torch.Tensor:
    """Each block of each sample at its own random student step (shared by the block's streams); regress
    the x0 prediction (under the block-causal mask) onto the trajectory's endpoint."""
    s1, b, f = trajectory[VIDEO].shape[:3]
    cfg = student.config
    blocks = f // cfg.frames_per_block
    idx_block = torch.randint(s1 - 1, (b, blocks), generator=generator).to(trajectory[VIDEO].device)  # [B, blocks]
    steps = torch.tensor(student_steps, dtype=torch.float32, device=idx_block.device)
    x_in = {}
    for name, traj in trajectory.items():
        idx = idx_block.repeat_interleave(block_frames(cfg, name), dim=1)  # [B, F_s]
        gather = idx.view(1, b, -1, *([1] * (traj.dim() - 3))).expand(1, *traj.shape[1:])  # [1, B, F_s, ...]
        x_in[name] = traj.gather(0, gather)[0]  # [B, F_s, ...]
    t = steps[idx_block.repeat_interleave(cfg.frames_per_block, dim=1)]  # [B, F]
    v = predict(student, x_in, t, cond, mask=causal_mask(cfg, f, t.device))
    ts = stream_t(cfg, t)
    return sum(F.mse_loss(predict_x0(x_in[k], v[k], ts[k]).float(), trajectory[k][-1].float()) for k in x_in)
