"""Find an object in an RGB frame by its colour.

Used twice: by the scripted players while recording (on the emulator's native 210x160 screen) and
by the evaluation for action following (on resized, possibly generated frames). Resized frames are
area-averaged, so an object's pixels are mixed with the background; each pixel is therefore weighted
by how close its colour is to the target relative to the background, and the centroid of the weights
is returned.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


# Weight lost per unit of distance from the background->target colour segment. Area-resized object
# pixels lie on the segment (distance ~0); other objects' colours lie off it. 4 rejects every
# other sprite colour of Pong/Breakout/Freeway/Boxing (e.g. Breakout's grey walls project to 0.97
# of the red ball's colour but lie 0.51 away from the segment).
OFF_SEGMENT_PENALTY = 4.0


@dataclass(kw_only=True, frozen=True)
class ColourTarget:
    """An object's colour and where to look for it, in fractions of the frame."""

    # RGB of the object on the emulator's screen.
    colour: tuple[int, int, int]
    # RGB of what surrounds it (mixing partner after resizing).
    background: tuple[int, int, int]
    # Search window [top, bottom) x [left, right) as fractions of height/width, so one target works
    # on the native screen crop and on any resized frame of it.
    rows: tuple[float, float] = (0.0, 1.0)
    cols: tuple[float, float] = (0.0, 1.0)
    # Optional band of rows (fractions) ignored inside the window, e.g. a same-coloured road marking.
    exclude_rows: tuple[float, float] | None = None
    # A pixel counts fully when its colour is at least this close (fraction of the target-to-background
    # distance) to the target; 0.35 keeps object pixels that kept about 2/3 of their contrast.
    full: float = 0.35
    # Minimum summed weight (in pixels) for a detection; below it the object is "not found".
    min_weight: float = 0.5


def colour_weights(frame: np.ndarray, target: ColourTarget) -> np.ndarray:
    """Per-pixel weight in [0, 1] that the pixel shows ``target`` ([H, W, 3] uint8 -> [H, W])."""
    if frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"frame must be [H, W, 3], got shape {frame.shape}")
    f = frame.astype(np.float32)
    c = np.asarray(target.colour, np.float32)
    b = np.asarray(target.background, np.float32)
    span = float(np.linalg.norm(c - b))
    if span <= 0:
        raise ValueError(f"colour {target.colour} equals background {target.background}")
    # Project each pixel onto the background->target segment: 1 at the target, 0 at the background;
    # off-segment colours (other objects) are penalised by their distance from the segment.
    d = (f - b) @ ((c - b) / span) / span  # [H, W]
    off = np.linalg.norm((f - b) - d[..., None] * (c - b), axis=-1) / span  # [H, W]
    w = np.clip((d - OFF_SEGMENT_PENALTY * off) / (1.0 - target.full), 0.0, 1.0)
    h, wd = w.shape
    r0, r1 = int(round(target.rows[0] * h)), int(round(target.rows[1] * h))
    c0, c1 = int(round(target.cols[0] * wd)), int(round(target.cols[1] * wd))
    mask = np.zeros_like(w)
    mask[r0:r1, c0:c1] = 1.0
    if target.exclude_rows is not None:
        e0, e1 = (int(round(f * h)) for f in target.exclude_rows)
        mask[e0:e1] = 0.0
    return w * mask


def locate(frame: np.ndarray, target: ColourTarget) -> tuple[float, float]:
    """(row, col) centroid of ``target`` in ``frame`` ([H, W, 3] uint8), NaNs when absent.

    Coordinates are in pixels of ``frame`` (pixel centres at integer + 0.5 are not used: pixel i
    has coordinate i).
    """
    w = colour_weights(frame, target)
    total = float(w.sum())
    if total < target.min_weight:
        return float("nan"), float("nan")
    rows = np.arange(w.shape[0], dtype=np.float64)
    cols = np.arange(w.shape[1], dtype=np.float64)
    r = float((w.sum(axis=1) * rows).sum() / total)
    c = float((w.sum(axis=0) * cols).sum() / total)
    return r, c


def locate_many(frames: np.ndarray, target: ColourTarget) -> np.ndarray:
    """Centroids for a stack of frames: [T, H, W, 3] or [T, 3, H, W] uint8 -> [T, 2] (row, col)."""
    if frames.ndim != 4:
        raise ValueError(f"frames must be 4-D, got shape {frames.shape}")
    if frames.shape[1] == 3 and frames.shape[-1] != 3:
        frames = frames.transpose(0, 2, 3, 1)  # [T, 3, H, W] -> [T, H, W, 3]
    return np.array([locate(f, target) for f in frames], dtype=np.float64)
