"""Process-group setup for ``torchrun`` and the two data-parallel strategies.

- ``ddp``: every rank holds the full weights (broadcast from rank 0 at start) and gradients are
  averaged with one flat ``all_reduce`` per update. This is DDP's arithmetic; the
  ``DistributedDataParallel`` wrapper itself does not fit Self-Forcing, whose step calls the model
  several times through several entry points (``forward_cached`` per block, ``encode_text``) before one
  backward, with each parameter receiving gradient from several forwards.
- ``fsdp``: FSDP2 (``torch.distributed.fsdp.fully_shard``) on the whole model as one unit, with
  ``forward_cached`` and ``encode_text`` registered as forward methods so their calls gather the
  parameters too.

Backends: NCCL on CUDA, gloo on the CPU (tests run 2 gloo processes). Rank 0 logs, samples and
writes the shared checkpoint files.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    strategy: str = "ddp"

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if name == "cuda":
        return torch.device(f"cuda:{local_rank}")
    return torch.device(name)


def init_distributed(device: str = "auto", strategy: str = "ddp") -> DistInfo:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1); a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank=rank, world=world, local_rank=local, device=dev, strategy=strategy)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def seed_everything(seed: int) -> None:
    """Seed the global RNGs (python, numpy, torch) identically on every rank: model init must agree."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_module(module: torch.nn.Module, info: DistInfo) -> None:
    """Copy rank 0's parameters and buffers to every rank (replicated strategy)."""
    if not info.enabled:
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def average_gradients(params: list[torch.nn.Parameter], info: DistInfo) -> None:
    """Mean of the gradients over ranks, in one flat all-reduce. A parameter no rank computed a gradient
    for keeps ``grad = None`` (so the optimiser skips it, as in one process); one that only some ranks
    reached counts as zero on the others."""
    if not info.enabled or info.strategy != "ddp":
        return
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=params[0].device)  # [P]
    dist.all_reduce(has, op=dist.ReduceOp.MAX)
    used = [p for p, h in zip(params, has.tolist()) if h > 0]
    if not used:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in used]
    flat = torch.cat([g.reshape(-1) for g in grads])  # [sum numel]
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= info.world
    offset = 0
    for p, g in zip(used, grads):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()  # [*p.shape]
        offset += n


def wrap(model: torch.nn.Module, info: DistInfo, *, trainable: bool) -> torch.nn.Module:
    """Apply the strategy to a network. Frozen networks stay replicated (no gradients to reduce)."""
    if not info.enabled:
        return model
    if info.strategy == "ddp" or not trainable:
        broadcast_module(model, info)
        return model
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    fully_shard(model)
    for method in ("forward_cached", "encode_text"):
        if hasattr(model, method):
            register_fsdp_forward_method(model, method)
    return model


def is_sharded(model: torch.nn.Module) -> bool:
    return any(type(p).__name__ == "DTensor" for p in model.parameters())


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """A whole tensor from a plain or sharded (DTensor) one; collective for DTensors."""
    return t.full_tensor() if type(t).__name__ == "DTensor" else t
