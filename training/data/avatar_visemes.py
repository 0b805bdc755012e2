"""Mouth shapes from phoneme timings: visemes with co-articulation, natural blinks, small head motion.

Each espeak-ng phoneme mnemonic maps to a viseme target (mouth opening and width, both in [0, 1]) and a
dominance: lip closures (p, b, m) and labiodentals (f, v) must be reached, so they dominate their
neighbours; vowels are reached less strictly; other consonants barely (the mouth keeps the vowel's
shape through them). Co-articulation is a dominance-weighted smoothing of the piecewise-constant targets
on a 1 ms grid (after Cohen and Massaro's dominance model): ``open(t) = sum_i w_i(t) target_i / sum_i
w_i(t)`` with Gaussian weights of width ``COART_SIGMA`` around each phoneme. A video frame's value is
the mean over the frame's time span.
"""
from __future__ import annotations

import numpy as np

# Gaussian width of co-articulation: 35 ms lets a vowel's opening spread across a short consonant, and a
# closure still closes the lips (dominance) at speaking rates up to ~220 words per minute.
COART_SIGMA = 0.035
GRID = 1000  # 1 ms

# (opening, width, dominance); first match on the mnemonic's prefix, longest prefixes first.
_VISEMES: list[tuple[tuple[str, ...], tuple[float, float, float]]] = [
    (("_",), (0.0, 0.5, 2.0)),  # pause: closed, relaxed
    (("p", "b", "m"), (0.0, 0.5, 8.0)),  # lip closure
    (("f", "v"), (0.1, 0.55, 5.0)),  # lower lip to teeth
    (("w", "W"), (0.15, 0.2, 3.0)),  # rounded, protruded
    (("tS", "dZ", "S", "Z"), (0.2, 0.3, 2.0)),
    (("T", "D"), (0.2, 0.5, 1.0)),
    (("r",), (0.25, 0.35, 1.0)),
    (("aI", "aU", "a", "A"), (0.95, 0.6, 1.5)),
    (("V",), (0.7, 0.55, 1.5)),
    (("O", "o", "0"), (0.7, 0.3, 1.5)),
    (("e", "E"), (0.6, 0.7, 1.2)),
    (("@", "3"), (0.45, 0.5, 1.0)),
    (("i", "I"), (0.3, 0.85, 1.2)),
    (("u", "U"), (0.3, 0.2, 1.5)),
]
_CONSONANT = (0.25, 0.5, 0.4)  # t d n l s z k g N h j x ...: tongue and jaw, the lips follow neighbours


def viseme(mnemonic: str) -> tuple[float, float, float]:
    """(opening, width, dominance) of one espeak-ng phoneme mnemonic (stress marks ignored)."""
    name = mnemonic.lstrip("'',%=")
    for prefixes, shape in _VISEMES:
        if name.startswith(prefixes):
            return shape
    return _CONSONANT


def mouth_track(phonemes: list[tuple[float, float, str]], frames: int, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """Opening and width ``[frames]`` in [0, 1] for phonemes (start s, end s, mnemonic); silence around."""
    duration = frames / fps
    n = int(round(duration * GRID))
    t = (np.arange(n) + 0.5) / GRID
    num_o = np.zeros(n)
    num_w = np.zeros(n)
    den = np.full(n, 1e-3)  # a faint pull toward closed and relaxed (0, 0.5) where nothing is said
    num_w += 0.5e-3
    for start, end, name in phonemes:
        o, w, d = viseme(name)
        centre = 0.5 * (start + end)
        half = 0.5 * (end - start)
        # a plateau over the phoneme with Gaussian shoulders of width COART_SIGMA
        dist = np.maximum(np.abs(t - centre) - half, 0.0)
        weight = d * np.exp(-0.5 * (dist / COART_SIGMA) ** 2)
        num_o += weight * o
        num_w += weight * w
        den += weight
    opening, width = num_o / den, num_w / den
    per = n // frames if frames else 0
    return opening[: per * frames].reshape(frames, per).mean(1), width[: per * frames].reshape(frames, per).mean(1)


def blink_track(frames: int, fps: float, rng: np.random.Generator) -> np.ndarray:
    """Eye openness ``[frames]`` in [0, 1]: blinks every 2-6 s (people blink ~15-20 times a minute), each
    closing and reopening over 120-240 ms."""
    t = (np.arange(frames) + 0.5) / fps
    eyes = np.ones(frames)
    at = rng.uniform(0.3, 3.0)
    while at < t[-1] + 1 if frames else False:
        length = rng.uniform(0.12, 0.24)
        phase = np.clip(1.0 - np.abs(t - at - length / 2) / (length / 2), 0.0, 1.0)
        eyes = np.minimum(eyes, 1.0 - phase)
        at += rng.uniform(2.0, 6.0)
    return eyes


def head_track(frames: int, fps: float, rng: np.random.Generator, amplitude: float = 1.5) -> np.ndarray:
    """Head offset ``[frames, 2]`` (dx, dy) in 64x64 pixels: two slow sways per axis (0.1-0.6 Hz)."""
    t = np.arange(frames) / fps
    out = np.zeros((frames, 2))
    for axis in range(2):
        for _ in range(2):
            freq, phase = rng.uniform(0.1, 0.6), rng.uniform(0, 2 * np.pi)
            out[:, axis] += rng.uniform(0.3, 0.5) * amplitude * np.sin(2 * np.pi * freq * t + phase)
    return out
