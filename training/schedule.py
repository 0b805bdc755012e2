"""The learning-rate schedule of every trainer: linear warm-up, then constant or a cosine decay."""
from __future__ import annotations

import math


def warmup_cosine(step: int, *, warmup: int, steps: int, floor: float, cosine: bool = True) -> float:
    """The multiplier of the base learning rate at ``step`` (0-based, the update being made).

    ``warmup`` steps rise linearly to 1; then 1 (``cosine=False``) or a cosine from 1 down to ``floor``
    at ``steps``, and ``floor`` after it.
    """
    if warmup and step < warmup:
        return (step + 1) / warmup
    if not cosine:
        return 1.0
    progress = min(max(step - warmup, 0) / max(steps - warmup, 1), 1.0)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
