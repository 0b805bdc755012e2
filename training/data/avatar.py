"""The avatar set: talking drawn faces driven by espeak-ng speech, synthesised deterministically from a seed.

``python -m streamgen.training.data.avatar --out data/avatar --train 400 --val 40 --test 40 --seed 0``

Layout::

    meta.json                     settings, the voices / identities / texts of every split
    train/clip_00000.npz ...      one compressed file per clip
    val/clip_00000.npz ...        held-out voices, texts and identities (model selection)
    test/clip_00000.npz ...       held-out voices, texts and identities, disjoint from val (evaluation)

Each clip: ``frames`` uint8 ``[T, 64, 64, 3]`` at ``FPS``; ``audio`` int16 ``[T * 1000]`` at 16 kHz (the
speech, then silence to the end of the last frame); ground truth per frame: ``mouth_open`` (the drawn
inner mouth height in pixels), ``mouth_width`` and ``eyes`` in [0, 1], ``head`` (dx, dy) and
``mouth_centre`` (x, y) in pixels; ``reference`` uint8 ``[64, 64, 3]`` (the identity at rest: mouth closed,
eyes open, head centred) and ``reference_mouth`` (x, y) its mouth centre; ``phonemes`` (JSON: start s, end s, espeak mnemonic) and ``info`` (JSON: text,
voice, rate, pitch, identity). Clip i of a split is a pure function of ``(seed, split, i)``.

Splits: the voices (language x espeak variant) are shuffled with the seed and cut into disjoint train /
val / test sets; identities are drawn per split from their own seed streams; the texts of each split
come from their own seed stream, and any text already in an earlier split (train, then val) is dropped
from the later one, so no sentence is shared.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .avatar_faces import draw_face, make_identity, mouth_centre, MAX_OPEN
from .avatar_speech import SAMPLE_RATE, say
from .avatar_visemes import blink_track, head_track, mouth_track

FPS = 16  # 16 fps: 1000 samples of 16 kHz per frame, 2 frames per latent of the avatar preset
FRAMES_MULTIPLE = 4  # one block of the avatar preset (2 latent frames x 2 pixel frames)
SPLITS = ("train", "val", "test")
LANGS = ("en-us", "en", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")
HELD_OUT_VOICES = 8  # per held-out split

_SUBJECTS = ("the old man", "my sister", "a tall woman", "the teacher", "our neighbour", "the small boy", "a doctor",
             "the pilot", "my friend", "the baker", "a farmer", "the singer", "his mother", "the captain", "a student",
             "the driver", "her father", "the painter", "a young girl", "the waiter")
_VERBS = ("bought", "painted", "found", "opened", "carried", "watched", "cooked", "fixed", "wanted", "moved",
          "cleaned", "borrowed", "pushed", "measured", "wrapped", "lifted", "dropped", "sold", "kept", "saw")
_OBJECTS = ("a blue umbrella", "the wooden box", "an apple pie", "seven books", "the heavy door", "a paper map",
            "the broken window", "a warm blanket", "some fresh bread", "the garden gate", "a bright lamp",
            "the morning paper", "a silver spoon", "two old bicycles", "the yellow boat", "a bag of oranges",
            "the kitchen table", "a small piano", "the red balloon", "a bottle of milk")
_TAILS = ("yesterday", "in the park", "before lunch", "after the storm", "on Monday", "at the market", "very slowly",
          "without a word", "near the river", "by the window", "last summer", "at midnight", "with great care",
          "for the party", "in a hurry", "before dawn", "every morning", "on the beach", "at the station", "again")
_OPENERS = ("", "", "", "Oh, ", "Well, ", "Look, ", "Today ", "Maybe ", "I think ", "Yes, ")


def all_voices() -> list[str]:
    return [f"{lang}+{variant}" for lang in LANGS for variant in VARIANTS]


def split_voices(seed: int) -> dict[str, list[str]]:
    """Disjoint voice sets: ``HELD_OUT_VOICES`` each for test and val, the rest for train."""
    voices = all_voices()
    order = np.random.default_rng([seed, 101]).permutation(len(voices))
    v = [voices[i] for i in order]
    return {"test": v[:HELD_OUT_VOICES], "val": v[HELD_OUT_VOICES : 2 * HELD_OUT_VOICES], "train": v[2 * HELD_OUT_VOICES :]}


def _sentence(rng: np.random.Generator) -> str:
    pick = lambda words: words[rng.integers(len(words))]  # noqa: E731
    return f"{pick(_OPENERS)}{pick(_SUBJECTS)} {pick(_VERBS)} {pick(_OBJECTS)} {pick(_TAILS)}.".capitalize()


def split_texts(seed: int, counts: dict[str, int]) -> dict[str, list[str]]:
    """``counts[split]`` distinct sentences per split from the split's own stream; none shared by two splits."""
    taken: set[str] = set()
    out: dict[str, list[str]] = {}
    for k, split in enumerate(SPLITS):
        rng = np.random.default_rng([seed, 202, k])
        texts: list[str] = []
        for _ in range(counts[split] * 50 + 100):
            if len(texts) == counts[split]:
                break
            t = _sentence(rng)
            if t not in taken:
                taken.add(t)
                texts.append(t)
        if len(texts) < counts[split]:
            raise ValueError(f"only {len(texts)} distinct sentences for {counts[split]} {split} clips")
        out[split] = texts
    return out


def split_identities(seed: int, counts: dict[str, int]) -> dict[str, list[dict]]:
    return {split: [make_identity(np.random.default_rng([seed, 303, k, i])).to_dict() for i in range(counts[split])]
            for k, split in enumerate(SPLITS)}


def make_clip(seed: int, split: str, index: int, text: str, voices: list[str], identities: list[dict]) -> dict[str, np.ndarray]:
    """Clip ``index`` of ``split``: speech, its frames and ground truth (a pure function of the arguments)."""
    from .avatar_faces import Identity

    rng = np.random.default_rng([seed, 404, SPLITS.index(split), index])
    voice = voices[rng.integers(len(voices))]
    rate, pitch = int(rng.integers(130, 211)), int(rng.integers(25, 76))
    ident_index = int(rng.integers(len(identities)))
    ident = Identity.from_dict(identities[ident_index])
    utt = say(text, voice, rate, pitch)
    gain = rng.uniform(0.3, 0.9) / max(float(np.abs(utt.audio).max()), 1e-6)
    frames = -(-int(np.ceil(len(utt.audio) / SAMPLE_RATE * FPS)) // FRAMES_MULTIPLE) * FRAMES_MULTIPLE
    audio = np.zeros(frames * SAMPLE_RATE // FPS, np.float32)
    audio[: len(utt.audio)] = utt.audio * gain
    opening, width = mouth_track(utt.phonemes, frames, FPS)
    eyes = blink_track(frames, FPS, rng)
    head = head_track(frames, FPS, rng)
    video = np.stack([draw_face(ident, opening[t], width[t], eyes[t], tuple(head[t])) for t in range(frames)])
    return {
        "frames": video,
        "audio": np.round(audio * 32767).astype(np.int16),
        "mouth_open": (MAX_OPEN * opening).astype(np.float32),
        "mouth_width": width.astype(np.float32),
        "eyes": eyes.astype(np.float32),
        "head": head.astype(np.float32),
        "mouth_centre": np.array([mouth_centre(ident, tuple(h)) for h in head], np.float32),
        "reference": draw_face(ident, 0.0, 0.5, 1.0, (0.0, 0.0)),
        "reference_mouth": np.array(mouth_centre(ident), np.float32),
        "phonemes": np.array(json.dumps(utt.phonemes)),
        "info": np.array(json.dumps({"text": text, "voice": voice, "rate": rate, "pitch": pitch, "identity": ident_index})),
    }


def _atomic_savez(path: Path, arrays: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
    os.close(fd)
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def build_dataset(out: str | Path, counts: dict[str, int], seed: int = 0, identities: dict[str, int] | None = None,
                  progress: bool = True) -> dict:
    """Write (or complete: existing clips are kept) the set; returns its meta."""
    out = Path(out)
    identities = identities or {"train": 12, "val": 3, "test": 3}
    meta = {"seed": seed, "fps": FPS, "sample_rate": SAMPLE_RATE, "counts": counts, "voices": split_voices(seed),
            "texts": split_texts(seed, counts), "identities": split_identities(seed, identities)}
    meta_path = out / "meta.json"
    if meta_path.exists() and json.loads(meta_path.read_text()) != json.loads(json.dumps(meta)):
        raise ValueError(f"{meta_path} was written with other settings; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    meta_path.write_text(json.dumps(meta, indent=1))
    total, done, t0 = sum(counts.values()), 0, time.time()
    for split in SPLITS:
        (out / split).mkdir(exist_ok=True)
        for i in range(counts[split]):
            path = out / split / f"clip_{i:05d}.npz"
            if not path.exists():
                _atomic_savez(path, make_clip(seed, split, i, meta["texts"][split][i], meta["voices"][split],
                                              meta["identities"][split]))
            done += 1
            if progress and (sys.stdout.isatty() or done % 25 == 0 or done == total):
                rate = done / max(time.time() - t0, 1e-6)
                print(f"{chr(13) if sys.stdout.isatty() else ''}{done}/{total} clips ({split}), {rate:.1f} clips/s, "
                      f"ETA {(total - done) / rate:.0f} s", end="" if sys.stdout.isatty() else "\n", flush=True)
    if progress and sys.stdout.isatty():
        print()
    return meta


def load_clip(path: str | Path) -> dict:
    with np.load(path) as z:
        clip = {k: z[k] for k in z.files}
    clip["phonemes"] = json.loads(str(clip["phonemes"]))
    clip["info"] = json.loads(str(clip["info"]))
    return clip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--train", type=int, default=400)
    ap.add_argument("--val", type=int, default=40)
    ap.add_argument("--test", type=int, default=40)
    ap.add_argument("--identities", type=int, nargs=3, default=(12, 3, 3), metavar=("TRAIN", "VAL", "TEST"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    build_dataset(args.out, {"train": args.train, "val": args.val, "test": args.test}, args.seed,
                  dict(zip(SPLITS, args.identities)))


if __name__ == "__main__":
    main()
