"""Lip-sync measures of the avatar (issue 17's evaluation), on frames against a clip's ground truth.

``mouth_sync(frames, clip)`` reads the mouth opening from frames with ``measure_mouth`` (the same reading
applied to the real frames gives the reference curve, so the measurement's own bias cancels) and reports:

- ``pearson``: correlation of the generated opening with the ground-truth opening (``mouth_open``);
- ``mae_px``: mean absolute difference in pixels (64x64 frame) between generated and real readings;
- ``lag_frames``: the shift of the generated curve against the truth at the peak of their
  cross-correlation (positive: the generated mouth moves late), searched within ``max_lag`` frames.

The mouth is read where the clip's ground truth puts it (``mouth_centre``): a generated face that drifts
away reads as closed, which the correlation then punishes.
"""
from __future__ import annotations

import numpy as np

from .data.avatar_faces import measure_mouth


def lagged_correlation(x: np.ndarray, y: np.ndarray, lag: int) -> float:
    """Pearson correlation of ``x[t + lag]`` with ``y[t]`` over their overlap."""
    if lag >= 0:
        a, b = x[lag:], y[: len(y) - lag]
    else:
        a, b = x[: len(x) + lag], y[-lag:]
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def mouth_sync(frames: np.ndarray, clip: dict, max_lag: int = 4) -> dict[str, float]:
    """Lip-sync of ``frames`` (uint8 ``[T, 64, 64, 3]``, aligned with the clip's frames) against ``clip``."""
    t = min(len(frames), len(clip["mouth_open"]))
    if t < 3:
        raise ValueError(f"mouth_sync needs at least 3 frames, got {t}")
    centres = clip["mouth_centre"][:t]
    generated = measure_mouth(frames[:t], centres, clip["reference"], clip["reference_mouth"])
    real = measure_mouth(clip["frames"][:t], centres, clip["reference"], clip["reference_mouth"])
    truth = clip["mouth_open"][:t].astype(np.float64)
    lags = range(-max_lag, max_lag + 1)
    scores = [lagged_correlation(generated, truth, lag) for lag in lags]
    return {
        "pearson": lagged_correlation(generated, truth, 0),
        "mae_px": float(np.abs(generated - real).mean()),
        "lag_frames": int(lags[int(np.argmax(scores))]),
        "frames": t,
    }
