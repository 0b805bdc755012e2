"""The Self-Forcing training rollout: the student generates block by block with its own rolling KV
caches (one per generated stream: video, and audio for joint models), the same loop as ``streamgen.session.Session`` (noise, few-step schedule with x0 prediction and
re-noising with fresh noise, then a clean refill of the cache at ``context_noise``), with stochastic
gradient truncation:

- one step index ``s`` is drawn once per rollout and shared by all blocks; the steps before ``s`` run
  without grad, step ``s`` is the only gradient-carrying forward of the block and its x0 prediction is
  the block's output (later steps are skipped);
- the refill runs on the detached output under ``no_grad``, so the cache only ever holds detached K / V
  and no gradient crosses blocks.

Noise is drawn in the session's order (block noise, then one re-noise draw per executed step that does
not exit, then the refill noise when ``context_noise > 0``; video before audio at each draw), so with ``s`` = the last step, batch 1 and the same seed the
rollout produces exactly the session's latents.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from streamgen.models.kv_cache import CacheWrite, RollingKVCache
from streamgen.samplers import add_noise, predict_x0, x0_and_renoise
from streamgen.training.conditioning import Cond
from streamgen.training.modalities import VIDEO, new_caches, predict_cached, stream_shape, streams


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
    streams: dict[str, torch.Tensor]  # every generated stream over the whole rollout (video: [B, F, C, H, W])
    blocks: list[dict[str, torch.Tensor]]  # per block, the same tensors before concatenation
    exit_index: int  # the step index that carried the gradient
    caches: dict[str, TrainingKVCache]

    @property
    def latents(self) -> torch.Tensor:
        return self.streams[VIDEO]

    @property
    def cache(self) -> TrainingKVCache:
        return self.caches[VIDEO]


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
    caches: dict[str, TrainingKVCache] | None = None,
    start_frame: int = 0,
    grad_from_block: int = 0,
    switch: tuple[int, Cond] | None = None,
) -> Rollout:
    """Generate ``num_frames`` video latent frames (and the audio of the same blocks) block by block.

    Blocks before ``grad_from_block`` run entirely without grad (long tuning: frames no loss looks at).
    ``switch = (k, new_cond)``: before block k the prompt changes and the caches are re-built from the
    clean latents under the new conditioning, as ``Session.set_prompt`` does (LongLive re-cache)."""
    cfg = model.config
    n = cfg.frames_per_block
    if num_frames % n:
        raise ValueError(f"num_frames={num_frames} is not a multiple of frames_per_block={n}")
    if not 0 <= exit_index < len(timesteps):
        raise ValueError(f"exit_index={exit_index} outside the {len(timesteps)} denoising steps")
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    caches = caches or new_caches(model, batch, TrainingKVCache)
    names = streams(cfg)
    shapes = {k: stream_shape(cfg, k, batch, n) for k in names}

    def noise() -> dict[str, torch.Tensor]:  # one draw per stream, video first (the session's order)
        return {k: torch.randn(shapes[k], generator=noise_generator, dtype=dtype).to(device) for k in names}

    blocks = []
    for k in range(num_frames // n):
        start = start_frame + k * n
        if switch is not None and k == switch[0] and k > 0:
            cond = switch[1]
            recache(model, caches, cond, blocks, start_frame)
        x, x0 = noise(), None
        for i, t in enumerate(timesteps):
            exit_now = i == exit_index
            with torch.set_grad_enabled(grad and exit_now and k >= grad_from_block):
                v = predict_cached(model, x, t, cond, caches, start)
            if exit_now:
                x0 = {s: predict_x0(x[s], v[s], t) for s in names}
                break
            t_next = timesteps[i + 1]  # exit_index < len(timesteps), so a step that does not exit has a next one
            fresh = noise()  # a re-noise draw for every step that has a next one, as the session does
            with torch.no_grad():
                pairs = {s: x0_and_renoise(x[s], v[s], t, t_next, fresh[s]) for s in names}
                x0, x = {s: p[0] for s, p in pairs.items()}, {s: p[1] for s, p in pairs.items()}
        blocks.append(x0)
        with torch.no_grad():
            clean = {s: x0[s].detach() for s in names}
            if cfg.context_noise > 0:
                ctx_noise = noise()
                clean = {s: add_noise(clean[s], ctx_noise[s], cfg.context_noise) for s in names}
            predict_cached(model, clean, cfg.context_noise, cond, caches, start)
    out = {s: torch.cat([b[s] for b in blocks], dim=1) for s in names}  # video [B, F, C, H, W], audio [B, Fa, Ca]
    return Rollout(out, blocks, exit_index, caches)


@torch.no_grad()
def recache(model, caches: dict, cond: Cond, blocks: list[dict], start_frame: int = 0) -> None:
    """Rebuild the caches from the sink blocks and the last kept blocks (the frames a ``Session`` keeps),
    clean, at their original positions, under ``cond``."""
    cfg = model.config
    n = cfg.frames_per_block
    keep = max(cfg.window_frames - cfg.sink_frames, cfg.recompute_frames)
    if cfg.audio is not None:
        window, sink = cfg.audio_cache_frames()
        keep = max(keep, (window - sink) // cfg.audio_frames_per_block * n)
    end = start_frame + len(blocks) * n
    first_recent = end - (min(keep, len(blocks) * n) // n * n)
    for cache in caches.values():
        cache.reset()
    for k, blk in enumerate(blocks):
        start = start_frame + k * n
        if start < cfg.sink_frames or start >= first_recent:
            clean = {s: x.detach() for s, x in blk.items()}
            predict_cached(model, clean, cfg.context_noise, cond, caches, start)
