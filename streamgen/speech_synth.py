"""Speech from text with Debian's ``espeak-ng``: the avatar training set's voices and the server's ``say``.

Each utterance is synthesised by ``espeak_worker.py`` (beside this file) in a fresh process: the C library
keeps its generator's state from one utterance to the next (see there), so the same text, voice, rate and
pitch give the same samples only from a fresh library; a process is also what a timeout can stop. The
worker calls ``libespeak-ng.so.1`` with ``ctypes`` and reports the sample where each phoneme starts; the
waveform (22050 Hz) is resampled to 16 kHz with ``torchaudio.functional.resample``.
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

SAMPLE_RATE = 16000  # the avatars' speech-in rate (AudioInConfig.sample_rate)
WORKER = Path(__file__).with_name("espeak_worker.py")


@dataclass
class Utterance:
    """One synthesised utterance: ``audio`` float32 ``[S]`` at 16 kHz, ``phonemes`` as (start s, end s,
    espeak mnemonic), the last one ending at the end of the audio."""

    audio: np.ndarray
    phonemes: list[tuple[float, float, str]]


def say(text: str, voice: str = "en-us", rate: int = 160, pitch: int = 50, *, timeout_s: float = 120.0) -> Utterance:
    """Synthesise ``text`` with ``voice`` (e.g. ``en-us+f3``), ``rate`` (words per minute), ``pitch`` (0-99).
    Raises RuntimeError naming the voice when espeak-ng fails, ``subprocess.TimeoutExpired`` past ``timeout_s``
    (the worker is killed) and ValueError for text the command line cannot carry (a NUL character)."""
    if "\x00" in text:
        raise ValueError("text for espeak-ng contains a NUL character")
    done = subprocess.run([sys.executable, "-I", str(WORKER), text, voice, str(int(rate)), str(int(pitch))],
                          capture_output=True, timeout=timeout_s)
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
