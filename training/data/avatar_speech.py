"""Speech for the avatar set: Debian's ``espeak-ng`` with phoneme timings (``streamgen.speech_synth``, shared
with the server's ``say``)."""
from __future__ import annotations

from streamgen.speech_synth import SAMPLE_RATE, Utterance, say

__all__ = ["SAMPLE_RATE", "Utterance", "say"]
