"""Lip-sync measures of the avatar (issue 17's evaluation), on frames against a clip's ground truth.

``mouth_sync(frames, clip)`` reads the mouth opening from frames with ``measure_mouth`` (the same reading
applied to the real frames gives the reference curve, so the measurement's own bias cancels) and reports:

- ``pearson``: correlation of the generated opening with the ground-truth opening (``mouth_open``);
- ``mae_px``: mean absolute difference in pixels (64x64 frame) between generated and real readings;
- ``lag_frames``: the shift of the generated curve against the truth at the peak of their
  cross-correlation (positive: the generated mouth moves late), searched within ``max_lag`` frames.

``sync_summary`` pools clips; ``face_mask`` / ``face_colour_distance`` / ``window_stats`` are the identity,
drift and collapse measures of a long stream (docs/models.md, "Avatars": the bound was stated first).

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
        "by_lag": scores,  # correlation at lags -max_lag .. max_lag (pooled over clips by ``sync_summary``)
        "frames": t,
    }


def sync_summary(results: list[dict]) -> dict[str, float]:
    """``mouth_sync`` results of many clips -> mean correlation and error, and the lag where the clips' mean
    lagged correlation peaks (pixel frames; one latent frame is ``temporal_upsample`` of them)."""
    if not results:
        raise ValueError("sync_summary needs at least one mouth_sync result")
    by_lag = np.mean([r["by_lag"] for r in results], axis=0)  # [2 max_lag + 1]
    max_lag = (len(by_lag) - 1) // 2
    return {"pearson": float(np.mean([r["pearson"] for r in results])),
            "pearson_min": float(np.min([r["pearson"] for r in results])),
            "mae_px": float(np.mean([r["mae_px"] for r in results])),
            "lag_frames": int(np.argmax(by_lag)) - max_lag, "clips": len(results)}


SKIN_TOLERANCE = 20.0  # levels: a reference pixel within this of the identity's skin colour is skin
SKIN_MARGIN = 2  # px: the head sways about +-1.5 px, so only skin this far inside the skin region is read
MOUTH_BOX = (6, 10)  # half height, half width (px) around the reference's mouth: its opening is not identity


def face_mask(reference: np.ndarray, skin, mouth: tuple[float, float] | None = None) -> np.ndarray:
    """Bool ``[64, 64]``: where the face colour is read: the reference's skin pixels (within
    ``SKIN_TOLERANCE`` of ``skin``) whose every neighbour within ``SKIN_MARGIN`` px is skin too, outside
    the box around the reference's ``mouth`` centre (x, y)."""
    dist = np.linalg.norm(reference.astype(np.float32) - np.asarray(skin, np.float32), axis=-1)  # [H, W]
    near = dist <= SKIN_TOLERANCE
    m = SKIN_MARGIN
    padded = np.pad(near, m)  # [H + 2m, W + 2m], False outside the frame
    h, w = near.shape
    mask = np.ones_like(near)
    for dy in range(2 * m + 1):
        for dx in range(2 * m + 1):
            mask &= padded[dy : dy + h, dx : dx + w]
    if mouth is not None:
        x, y = int(round(mouth[0])), int(round(mouth[1]))
        mask[max(y - MOUTH_BOX[0], 0) : y + MOUTH_BOX[0] + 1, max(x - MOUTH_BOX[1], 0) : x + MOUTH_BOX[1] + 1] = False
    if mask.sum() < 20:
        raise ValueError(f"face_mask: only {int(mask.sum())} pixels of the reference are well inside the skin colour {skin}")
    return mask


def face_colour_distance(frames: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``[T]``: Euclidean distance (RGB, 0-255) of each frame's mean colour under ``mask`` to the reference's."""
    ref = reference[mask].astype(np.float64).mean(axis=0)  # [3]
    means = frames[:, mask].astype(np.float64).mean(axis=1)  # [T, N, 3] -> [T, 3]
    return np.linalg.norm(means - ref, axis=-1)


def window_stats(frames: np.ndarray, reference: np.ndarray, mask: np.ndarray, mouth: np.ndarray | None,
                 truth: np.ndarray | None, window: int = 100) -> list[dict[str, float]]:
    """Per window of ``window`` frames of a long stream: the face-colour distance to the reference (mean of
    the frames'), the picture's detail (mean pixel std), the mean absolute change between consecutive frames
    (0 = frozen), and with the mouth readings ``mouth`` and the true openings ``truth`` their correlation."""
    out = []
    for lo in range(0, len(frames) - window + 1, window):
        f = frames[lo : lo + window]
        row = {"start": lo, "face_distance": float(face_colour_distance(f, reference, mask).mean()),
               "detail": float(f.reshape(len(f), -1).astype(np.float32).std(axis=1).mean()),  # [w, H*W*3] -> [w]
               "change": float(np.abs(np.diff(f.astype(np.int16), axis=0)).mean())}
        if mouth is not None and truth is not None:
            row["mouth_pearson"] = lagged_correlation(mouth[lo : lo + window], truth[lo : lo + window], 0)
        out.append(row)
    return out
