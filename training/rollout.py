"""The Self-Forcing training rollout: the student generates block by block with its own rolling KV
caches (one per generated stream: video, and audio for joint models) through the library's one block
loop, ``streamgen.block_loop.run_block``, the loop ``streamgen.session.Session`` streams with (noise,
few-step schedule with x0 prediction and re-noising with fresh noise, then a clean refill of the cache
at ``context_noise``). The rollout adds only the gradient gating (stochastic gradient truncation):

- one step index ``s`` per block (drawn per block, or once per rollout and shared by its blocks:
  ``sample_exit_indices``); the steps before ``s`` run without grad, step ``s`` is the only
  gradient-carrying forward of the block and its x0 prediction is the block's output (later steps are
  skipped);
- the refill runs on the detached output under ``no_grad``, so the cache only ever holds detached K / V
  and no gradient crosses blocks.

Noise is drawn in the session's order (the block loop's: block noise, then one re-noise draw per
executed step that does not exit, then the refill noise when ``context_noise > 0``; video before audio at each draw), so
with ``s`` = the last step, batch 1 and the same seed the rollout produces exactly the session's latents.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from streamgen import block_loop
from streamgen.models.kv_cache import CacheWrite, RollingKVCache
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
    exit_indices: tuple[int, ...]  # per block, the step index that carried the gradient
    caches: dict[str, TrainingKVCache]

    @property
    def latents(self) -> torch.Tensor:
        return self.streams[VIDEO]

    @property
    def cache(self) -> TrainingKVCache:
        return self.caches[VIDEO]


def sample_exit_indices(num_steps: int, num_blocks: int, generator: torch.Generator, *, per: str = "block",
                        last_step_only: bool = False) -> tuple[int, ...]:
    """The denoising step index that carries each block's gradient, drawn from ``generator`` (shared by all
    ranks): one per block (``per="block"``: over a few rollouts every step is trained in every block
    position) or one per rollout repeated for its blocks (``per="rollout"``); the last step for every block
    with ``last_step_only``. Always ``num_blocks`` draws' worth of state for "block", one for "rollout"."""
    if per not in ("block", "rollout"):
        raise ValueError(f"exit steps drawn per {per!r}: expected 'block' or 'rollout'")
    if last_step_only:
        return (num_steps - 1,) * num_blocks
    if per == "rollout":
        return (int(torch.randint(num_steps, (1,), generator=generator)),) * num_blocks
    return tuple(int(i) for i in torch.randint(num_steps, (num_blocks,), generator=generator))


def self_forcing_rollout(
    model,
    cond: Cond,
    *,
    batch: int,
    num_frames: int,
    timesteps: tuple[float, ...],
    exit_index: int | Sequence[int],
    noise_generator: torch.Generator,
    grad: bool = True,
    caches: dict[str, TrainingKVCache] | None = None,
    start_frame: int = 0,
    grad_from_block: int = 0,
    switch: tuple[int, Cond] | None = None,
) -> Rollout:
    """Generate ``num_frames`` video latent frames (and the audio of the same blocks) block by block.

    ``exit_index``: the step index that carries each block's gradient, one for all blocks or one per block.
    Blocks before ``grad_from_block`` run entirely without grad (long tuning: frames no loss looks at).
    ``switch = (k, new_cond)``: before block k the prompt changes and the caches are re-built from the
    clean latents under the new conditioning, as ``Session.set_prompt`` does (LongLive re-cache)."""
    cfg = model.config
    n = cfg.frames_per_block
    if num_frames % n:
        raise ValueError(f"num_frames={num_frames} is not a multiple of frames_per_block={n}")
    num_blocks = num_frames // n
    exits = (exit_index,) * num_blocks if isinstance(exit_index, int) else tuple(int(i) for i in exit_index)
    if len(exits) != num_blocks:
        raise ValueError(f"exit_index has {len(exits)} entries for {num_blocks} blocks")
    bad = [i for i in exits if not 0 <= i < len(timesteps)]
    if bad:
        raise ValueError(f"exit_index={bad[0]} outside the {len(timesteps)} denoising steps")
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    caches = caches or new_caches(model, batch, TrainingKVCache)
    names = streams(cfg)
    shapes = {k: stream_shape(cfg, k, batch, n) for k in names}

    def noise() -> dict[str, torch.Tensor]:  # one draw per stream, video first (the session's order)
        return {k: torch.randn(shapes[k], generator=noise_generator, dtype=dtype).to(device) for k in names}

    blocks = []
    for k in range(num_blocks):
        start = start_frame + k * n
        if switch is not None and k == switch[0] and k > 0:
            cond = switch[1]
            recache(model, caches, cond, blocks, start_frame)

        def forward(xs: block_loop.Streams, t: float, start: int = start, cond: Cond = cond) -> block_loop.Streams:
            return predict_cached(model, xs, t, cond, caches, start)

        blocks.append(block_loop.run_block(forward, noise, timesteps, context_noise=cfg.context_noise,
                                           exit_index=exits[k], grad=grad and k >= grad_from_block))
    out = {s: torch.cat([b[s] for b in blocks], dim=1) for s in names}  # video [B, F, C, H, W], audio [B, Fa, Ca]
    return Rollout(out, blocks, exits, caches)


@torch.no_grad()
def recache(model, caches: dict, cond: Cond, blocks: list[dict], start_frame: int = 0) -> None:
    """Rebuild the caches from the sink blocks and the last kept blocks (the frames a ``Session`` keeps),
    clean, at their original positions, under ``cond``."""
    cfg = model.config
    n = cfg.frames_per_block
    keep = block_loop.keep_frames(cfg)
    end = start_frame + len(blocks) * n
    first_recent = end - (min(keep, len(blocks) * n) // n * n)
    for cache in caches.values():
        cache.reset()
    for k, blk in enumerate(blocks):
        start = start_frame + k * n
        if start < cfg.sink_frames or start >= first_recent:
            clean = {s: x.detach() for s, x in blk.items()}
            predict_cached(model, clean, cfg.context_noise, cond, caches, start)
