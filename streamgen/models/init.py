"""Initialisation shared by the model's parts.

``INIT_STD``: the standard deviation of every small normal initialisation (learnable tokens, and the
zero-initialised outputs that a randomly initialised model must not leave at zero), as in DiT / Wan.
"""
from __future__ import annotations

import torch

INIT_STD = 0.02


def small_normal_(weight: torch.Tensor) -> torch.Tensor:
    """Fill ``weight`` in place from ``N(0, INIT_STD^2)``."""
    return torch.nn.init.normal_(weight, std=INIT_STD)


def zero_linear_(linear: torch.nn.Linear | None) -> None:
    """Zero a linear layer's weight and bias in place (a zero-initialised output adds exactly zero);
    nothing for None or a layer still on the meta device (its weights come from a checkpoint)."""
    if linear is None or linear.weight.device.type == "meta":
        return
    torch.nn.init.zeros_(linear.weight)
    if linear.bias is not None:
        torch.nn.init.zeros_(linear.bias)
