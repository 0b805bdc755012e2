"""What an objective gets from the training loop, passed in: the configs, the generators, batches, the
networks it asks for and the update of a named network. Objectives never see the trainer (the trainer
calls objectives; objectives call only these functions), so either side can change without the other.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch


@dataclass(kw_only=True)
class StepContext:
    config: Any  # the run's RunConfig
    model_config: Any  # the architecture every network of the run shares (ModelConfig)
    timesteps: tuple[float, ...]  # the student's warped denoising timesteps
    # "shared": identical on every rank (exit steps, prompt switches); "local": per rank (noise, timesteps).
    generators: dict[str, torch.Generator]
    rank: int  # this process's rank (per-rank cached files)
    device: torch.device
    dtype: torch.dtype  # weights' dtype (fp32; bfloat16 is an autocast compute dtype)
    batch: Callable[[int], dict]  # the batch of a step (a pure function of seed, rank and step)
    # update(name, loss): backward, gradient averaging, clipping, the optimiser step (EMA for the student)
    update: Callable[[str, torch.Tensor], None]
    cached: Callable[[str, Callable[[], dict]], dict]  # tensors computed once per run, kept in the run folder
    # build_network(init_folder_or_None, trainable=..., role=...) -> the network on the device
    build_network: Callable[..., torch.nn.Module]
