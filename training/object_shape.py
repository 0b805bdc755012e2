"""Shape-checked object positions for the counterfactual evaluation.

``data/locate.py`` returns the colour-weighted centroid of an object, so a paddle smeared over several
positions scores at its mean. Here an object counts as drawn only when its colour mass and its extent
look like the emulator's own sprite: one contiguous run of rows (columns for a sideways mover) whose
length and summed colour weight are close to the real object's. The reference sizes (``ShapeRef``) are
measured on emulator frames, never typed in.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .data.locate import ColourTarget, colour_weights

# A row belongs to the object when its colour weight is at least this share of the strongest row's: a
# crisp sprite's edge rows (area-resized, partly covered) keep about half, a smear's rows all fall short.
RUN_SHARE = 0.5


@dataclass(kw_only=True, frozen=True)
class ShapeRef:
    """The real object's size, measured on emulator frames, and how far a drawn one may differ."""

    # Median summed colour weight (pixels) of the real object.
    mass: float
    # Median length (pixels) of its run along the measured axis.
    extent: float
    # A drawn object's mass may differ by this share of ``mass``: 0.4 keeps a crisp sprite at any
    # sub-pixel offset (its area-resized mass varies by about a quarter) and rejects one split in two.
    mass_tolerance: float = 0.4
    # ... and its run by this many pixels: the area resize makes a sprite's run one pixel longer or
    # shorter depending on its sub-pixel offset; two pixels more is a smear.
    extent_tolerance: float = 2.0


@dataclass(frozen=True)
class Shapes:
    """Per frame ``[T]``: centroid along ``axis`` (NaN when nothing is found), mass, run length, run count."""

    position: np.ndarray
    mass: np.ndarray
    extent: np.ndarray
    runs: np.ndarray

    def valid(self, ref: ShapeRef) -> np.ndarray:
        """``[T]`` bool: one run, with mass and length like the real object's."""
        return ((self.runs == 1) & (np.abs(self.mass - ref.mass) <= ref.mass_tolerance * ref.mass)
                & (np.abs(self.extent - ref.extent) <= ref.extent_tolerance))


def measure(frames: np.ndarray, target: ColourTarget, axis: int = 0) -> Shapes:
    """Shape measures of ``target`` along ``axis`` (0 rows, 1 cols) in uint8 frames ``[T, H, W, 3]``."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [T, H, W, 3], got shape {frames.shape}")
    n = len(frames)
    pos, mass, ext, runs = (np.full(n, np.nan), np.zeros(n), np.zeros(n), np.zeros(n, np.int64))
    for i, f in enumerate(frames):
        w = colour_weights(f, target)  # [H, W]
        profile = w.sum(axis=1 - axis)  # [H] for rows, [W] for cols
        total = float(profile.sum())
        mass[i] = total
        if total < target.min_weight:
            continue
        on = profile >= RUN_SHARE * profile.max()
        edges = np.diff(np.concatenate([[0], on.astype(np.int8), [0]]))
        runs[i] = int((edges == 1).sum())
        ext[i] = float(on.sum())
        idx = np.arange(len(profile), dtype=np.float64)
        pos[i] = float((profile * idx).sum() / total)
    return Shapes(pos, mass, ext, runs)


def calibrate(real: Shapes, keep: np.ndarray | None = None) -> ShapeRef:
    """The real object's median mass and run length over found single-run frames (``keep``: a further mask)."""
    ok = (real.runs == 1) & ~np.isnan(real.position)
    if keep is not None:
        ok &= keep
    if not ok.any():
        raise ValueError("no emulator frame shows the object as one run: cannot calibrate its shape")
    return ShapeRef(mass=float(np.median(real.mass[ok])), extent=float(np.median(real.extent[ok])))


def ball_shapes(frames: np.ndarray, target: ColourTarget) -> tuple[Shapes, Shapes]:
    """The ball measured along rows and along columns (its centroid is the pair of positions)."""
    return measure(frames, target, 0), measure(frames, target, 1)
