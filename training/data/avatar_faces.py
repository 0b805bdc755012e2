"""Drawn 2-D faces for the avatar set: identities and the frames of a talking face.

An :class:`Identity` is drawn from a seed: skin, hair (colour and style), iris colour, glasses,
background, shirt, face proportions and eye spacing. :func:`draw_face` renders one frame at 4x the
output size with PIL and area-averages it to 64x64 (``Image.BOX``), so edges are anti-aliased.

The mouth's inner opening (a dark ellipse inside the lips) is ``MAX_OPEN * opening`` pixels high at the
output size: that number is the ground truth saved per frame, and :func:`measure_mouth` reads it back
from a frame (the dark pixels of the mouth region), the measurement ``streamgen evaluate`` applies to
generated frames.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64
SCALE = 4  # drawn at 256x256, area-averaged to 64x64
MAX_OPEN = 6.0  # inner mouth height at full opening, output pixels (a wide-open mouth ~ 1/10 of the frame)
MOUTH_DARK = (25, 5, 12)  # far from every skin and lip colour, so the measurement finds it

_SKINS = [(255, 219, 172), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (92, 58, 32)]
_HAIRS = [(20, 15, 10), (70, 45, 25), (140, 90, 40), (220, 190, 110), (160, 60, 30), (120, 120, 120)]
_IRIS = [(60, 40, 20), (40, 90, 160), (50, 120, 60), (90, 90, 90)]
STYLES = ("short", "long", "bald", "bun")


@dataclass
class Identity:
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    style: str
    iris: tuple[int, int, int]
    glasses: tuple[int, int, int] | None
    background: tuple[int, int, int]
    shirt: tuple[int, int, int]
    lips: tuple[int, int, int]
    face_w: float  # half-width of the face, output pixels
    face_h: float  # half-height
    eye_sep: float  # half the distance between the eyes

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Identity":
        """The inverse of ``to_dict`` after a JSON round trip (colours come back as lists)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _jitter(rng: np.random.Generator, colour, amount: int) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)


def make_identity(rng: np.random.Generator) -> Identity:
    skin = _jitter(rng, _SKINS[rng.integers(len(_SKINS))], 12)
    lips = tuple(int(0.6 * c + 0.4 * r) for c, r in zip(skin, (200, 70, 80)))  # skin toward red
    glasses = _jitter(rng, (30, 30, 30), 25) if rng.random() < 0.35 else None
    return Identity(
        skin=skin, hair=_jitter(rng, _HAIRS[rng.integers(len(_HAIRS))], 15), style=STYLES[rng.integers(len(STYLES))],
        iris=_jitter(rng, _IRIS[rng.integers(len(_IRIS))], 15), glasses=glasses,
        background=tuple(int(v) for v in rng.integers(40, 230, 3)), shirt=tuple(int(v) for v in rng.integers(20, 235, 3)),
        lips=lips, face_w=float(rng.uniform(12.0, 15.0)), face_h=float(rng.uniform(15.0, 18.0)),
        eye_sep=float(rng.uniform(4.8, 6.2)),
    )


def mouth_centre(ident: Identity, head: tuple[float, float] = (0.0, 0.0)) -> tuple[float, float]:
    """Centre of the mouth in output pixels."""
    return 32.0 + head[0], 30.0 + head[1] + 0.45 * ident.face_h


def draw_face(ident: Identity, opening: float, width: float, eyes: float, head: tuple[float, float]) -> np.ndarray:
    """One frame uint8 ``[64, 64, 3]``: mouth ``opening`` / ``width`` and ``eyes`` openness in [0, 1],
    ``head`` offset (dx, dy) in output pixels."""
    s = SCALE
    img = Image.new("RGB", (SIZE * s, SIZE * s), ident.background)
    d = ImageDraw.Draw(img)

    def ell(cx, cy, rx, ry, fill=None, outline=None, w=1):
        d.ellipse([(cx - rx) * s, (cy - ry) * s, (cx + rx) * s, (cy + ry) * s], fill=fill, outline=outline, width=w)

    cx, cy = 32.0 + head[0], 30.0 + head[1]
    fw, fh = ident.face_w, ident.face_h
    if ident.style == "long":
        ell(cx, cy + 4, fw + 3.5, fh + 5, fill=ident.hair)
    d.rectangle([(cx - 5) * s, (cy + fh - 4) * s, (cx + 5) * s, SIZE * s], fill=ident.skin)  # neck
    ell(cx, SIZE + 6, fw + 10, 14, fill=ident.shirt)  # shoulders
    ell(cx, cy, fw, fh, fill=ident.skin)
    if ident.style in ("short", "long", "bun"):
        d.pieslice([(cx - fw - 1) * s, (cy - fh - 1) * s, (cx + fw + 1) * s, (cy + fh * 0.6) * s], 180, 360, fill=ident.hair)
    if ident.style == "bun":
        ell(cx, cy - fh - 2.5, 5, 4, fill=ident.hair)
    ey = cy - 0.15 * fh
    for side in (-1, 1):
        ex = cx + side * ident.eye_sep
        ry = max(0.15, 1.8 * eyes)
        ell(ex, ey, 2.6, ry, fill=(245, 245, 245))
        if eyes > 0.2:
            r = min(1.3, ry)
            ell(ex, ey, r, r, fill=ident.iris)
        ell(ex, ey - 2.6, 2.4, 0.5, fill=tuple(int(c * 0.6) for c in ident.hair))  # brow
        if ident.glasses is not None:
            ell(ex, ey, 3.6, 3.2, outline=ident.glasses, w=s // 2 + 1)
    if ident.glasses is not None:
        d.line([(cx - ident.eye_sep + 3.6) * s, ey * s, (cx + ident.eye_sep - 3.6) * s, ey * s], fill=ident.glasses, width=s // 2 + 1)
    d.line([cx * s, (ey + 2) * s, (cx - 0.8) * s, (cy + 0.2 * fh) * s], fill=tuple(int(c * 0.8) for c in ident.skin), width=s // 2)
    mx, my = mouth_centre(ident, head)
    half_w = 3.0 + 2.5 * width
    inner = MAX_OPEN * opening
    ell(mx, my, half_w + 0.8, inner / 2 + 0.9, fill=ident.lips)
    if inner > 0:
        ell(mx, my, half_w, inner / 2, fill=MOUTH_DARK)
    return np.asarray(img.resize((SIZE, SIZE), Image.BOX))


def measure_mouth(frames: np.ndarray, centres: np.ndarray, reference: np.ndarray | None = None,
                  reference_centre: tuple[float, float] | None = None) -> np.ndarray:
    """Mouth opening ``[T]`` in output pixels read from frames uint8 ``[T, 64, 64, 3]``: the darkness-weighted
    height of the mouth interior in a 16x12 box around each frame's mouth centre ``[T, 2]`` (x, y). With the
    identity's ``reference`` image (mouth closed, head centred; its mouth at ``reference_centre``) its
    reading is subtracted: dark lips or skin read as a small constant opening, different per identity."""
    out = np.zeros(len(frames))
    dark = np.asarray(MOUTH_DARK, np.float32)
    for i, (frame, (x, y)) in enumerate(zip(frames, centres)):
        x0, y0 = int(round(x)) - 8, int(round(y)) - 6
        box = frame[max(y0, 0) : y0 + 12, max(x0, 0) : x0 + 16].astype(np.float32)  # [12, 16, 3]
        # how close each pixel is to the interior colour (1 = interior, 0 = 60+ levels away: lips, skin)
        near = np.clip(1.0 - np.linalg.norm(box - dark, axis=-1) / 60.0, 0.0, 1.0)
        columns = near.sum(0)  # interior pixels per column
        out[i] = np.sort(columns)[-3:].mean()  # the opening's height at its widest columns
    if reference is not None:
        out -= measure_mouth(reference[None], np.array([reference_centre]))[0]
    return out
