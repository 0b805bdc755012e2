"""Speech for the avatar set: Debian's ``espeak-ng`` through its C library, with phoneme timings.

Each utterance is synthesised by ``espeak_worker.py`` in a fresh process (the library carries state from
one utterance to the next; see there), which calls ``libespeak-ng.so.1`` with ``ctypes`` and reports the
sample where each phoneme starts. The waveform (22050 Hz) is resampled to 16 kHz with
``torchaudio.functional.resample``. The same text, voice, rate and pitch give the same samples.
"""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchaudio

SAMPLE_RATE = 16000
WORKER = Path(__file__).with_name("espeak_worker.py")


@dataclass
class Utterance:
    """One synthesised utterance: ``audio`` float32 ``[S]`` at 16 kHz, ``phonemes`` as (start s, end s,
    espeak mnemonic), the last one ending at the end of the audio."""

    audio: np.ndarray
    phonemes: list[tuple[float, float, str]]


def say(text: str, voice: str, rate: int, pitch: int) -> Utterance:
    """Synthesise ``text`` with ``voice`` (e.g. ``en-us+f3``), ``rate`` (words per minute), ``pitch`` (0-99)."""
    done = subprocess.run([sys.executable, "-I", str(WORKER), text, voice, str(int(rate)), str(int(pitch))],
                          capture_output=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"espeak-ng failed for voice {voice!r}: {done.stderr.decode(errors='replace').strip()[-300:]}")
    header, _, raw = done.stdout.partition(b"\n")
    info = json.loads(header)
    sr = info["sample_rate"]
    wav = np.frombuffer(raw, np.int16).astype(np.float32) / 32768.0
    audio = torchaudio.functional.resample(torch.from_numpy(wav), sr, SAMPLE_RATE).numpy()
    duration = len(audio) / SAMPLE_RATE
    starts = [(min(s / sr, duration), name) for s, name in info["events"]]
    phonemes = [(t, starts[i + 1][0] if i + 1 < len(starts) else duration, name) for i, (t, name) in enumerate(starts)]
    return Utterance(audio, [p for p in phonemes if p[1] > p[0]])
