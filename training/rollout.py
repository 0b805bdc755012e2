"""The Self-Forcing training rollout: the student generates block by block with its own rolling KV
cache, the same loop as ``streamgen.session.Session`` (noise, few-step schedule with x0 prediction and
re-noising with fresh noise, then a clean refill of the cache at ``context_noise``), with stochastic
gradient truncation:

- one step index ``s`` is drawn once per rollout and shared by all blocks; the steps before ``s`` run
  without grad, step ``s`` is the only gradient-carrying forward of the block and its x0 prediction is
  the block's output (later steps are skipped);
- the refill runs on the detached output under ``no_grad``, so the cache only ever holds detached K / V
  and no gradient crosses blocks.

Noise is drawn in the session's order (block noise, then one re-noise draw per executed step, then the
refill noise when ``context_noise > 0``), so with ``s`` = the last step, batch 1 and the same seed the
rollout produces exactly the session's latents.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from streamgen.models.kv_cache import CacheWrite, RollingKVCache
from streamgen.samplers import add_noise, predict_x0, x0_and_renoise
from streamgen.training.conditioning import Cond, frame_timesteps, velocity_cached


class TrainingKVCache(RollingKVCache):
    """A rolling cache whose gradient-carrying writes are functional.

    The model writes a block's K / V in place before attending. In place, a gradient-carrying write would
    make the buffer part of the graph, and the next no-grad write (the refill) would corrupt the saved
    tensors. Here a write under grad builds ``[old prefix | new K / V | old suffix]`` out of place for the
    attention read that follows; the buffers themselves only ever receive no-grad (detached) writes.
    Pointers and slot placement are exactly the inference cache's (the parent class's ``plan``).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._pending: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def write(self, layer: int, plan: CacheWrite, k: torch.Tensor, v: torch.Tensor) -> None:
        if torch.is_grad_enabled() and (k.requires_grad or v.requires_grad):
            s, e = plan.slot_start, plan.slot_start + plan.num_tokens
            kb, vb = self.k[layer], self.v[layer]  # [B, slots, H, D]
            self._pending[layer] = (
                torch.cat([kb[:, :s], k.to(kb.dtype), kb[:, e:]], dim=1),  # [B, slots, H, D]
                torch.cat([vb[:, :s], v.to(vb.dtype), vb[:, e:]], dim=1),  # [B, slots, H, D]
            )
            return
        self._pending.pop(layer, None)
        super().write(layer, plan, k, v)

    def read(self, layer: int, plan: CacheWrite) -> tuple[torch.Tensor, torch.Tensor]:
        pending = self._pending.pop(layer, None)
        if pending is None:
            return super().read(layer, plan)
        return pending[0][:, : plan.valid_tokens], pending[1][:, : plan.valid_tokens]


@dataclass
class Rollout:
    latents: torch.Tensor  # [B, F, C, H, W]: each block's output (x0 at the exit step)
    blocks: list[torch.Tensor]  # per block [B, n, C, H, W] (the same tensors, before concatenation)
    exit_index: int  # the step index that carried the gradient
    cache: TrainingKVCache


def sample_exit_index(num_steps: int, generator: torch.Generator, last_step_only: bool = False) -> int:
    """The denoising step index that carries the gradient; drawn from a generator shared by all ranks."""
    if last_step_only:
        return num_steps - 1
    return int(torch.randint(num_steps, (1,), generator=generator))


def self_forcing_rollout(
    model,
    cond: Cond,
    *,
    batch: int,
    num_frames: int,
    timesteps: tuple[float, ...],
    exit_index: int,
    noise_generator: torch.Generator,
    grad: bool = True,
    cache: TrainingKVCache | None = None,
    start_frame: int = 0,
) -> Rollout:
    """Generate ``num_frames`` latent frames block by block (``num_frames`` a multiple of the block)."""
    cfg = model.config
    n = cfg.frames_per_block
    if num_frames % n:
        raise ValueError(f"num_frames={num_frames} is not a multiple of frames_per_block={n}")
    if not 0 <= exit_index < len(timesteps):
        raise ValueError(f"exit_index={exit_index} outside the {len(timesteps)} denoising steps")
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    if cache is None:
        cache = TrainingKVCache(cfg, batch=batch, dtype=dtype, device=device)
    shape = (batch, n, cfg.in_channels, cfg.latent_height, cfg.latent_width)

    def noise() -> torch.Tensor:
        return torch.randn(shape, generator=noise_generator, dtype=dtype).to(device)

    blocks = []
    for k in range(num_frames // n):
        start = start_frame + k * n
        x, x0 = noise(), None
        for i, t in enumerate(timesteps):
            t_frames = frame_timesteps(t, batch, n, device)  # [B, n]
            exit_now = i == exit_index
            with torch.set_grad_enabled(grad and exit_now):
                v = velocity_cached(model, x, t_frames, cond, cache, start)
            t_next = timesteps[i + 1] if i + 1 < len(timesteps) else 0.0
            fresh = noise()  # drawn at every executed step, as the session does
            if exit_now:
                x0 = predict_x0(x, v, t)
                break
            with torch.no_grad():
                x0, x = x0_and_renoise(x, v, t, t_next, fresh)
        blocks.append(x0)
        with torch.no_grad():
            clean = x0.detach()
            if cfg.context_noise > 0:
                clean = add_noise(clean, noise(), cfg.context_noise)
            velocity_cached(model, clean, frame_timesteps(cfg.context_noise, batch, n, device), cond, cache, start)
    return Rollout(torch.cat(blocks, dim=1), blocks, exit_index, cache)  # latents [B, F, C, H, W]
