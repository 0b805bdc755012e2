"""Image metrics shared by the evaluations."""
from __future__ import annotations

import numpy as np

PSNR_CAP_DB = 60.0  # identical frames have infinite PSNR; the cap keeps means finite


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame PSNR (dB) of uint8 frames ``[N, ...]`` (any layout, e.g. ``[N, H, W, 3]``) -> ``[N]``."""
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(axis=1)  # [N, ...] -> [N]
    return np.minimum(10 * np.log10(255.0**2 / np.maximum(mse, 1e-12)), PSNR_CAP_DB)
