"""The audio level in every audio RTP packet (server/audio_level.py): the numpy version returns exactly
what aiortc's own function returns, and the server's app makes aiortc's sender use it."""
from __future__ import annotations

import numpy as np
from aiortc import rtp
from av import AudioFrame

from streamgen.server.audio_level import aiortc_audio_level_dbov, audio_level_dbov, install


def _frame(pcm: np.ndarray, layout: str = "stereo") -> AudioFrame:
    frame = AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout=layout)  # as PacedAudioTrack builds it
    frame.sample_rate = 48000
    return frame


def test_the_numpy_level_equals_aiortcs_on_every_kind_of_frame():
    rng = np.random.default_rng(0)
    frames = [np.zeros((960, 2), np.int16),  # silence: -127
              np.full((960, 2), 32767, np.int16), np.full((960, 2), -32768, np.int16),  # full scale: 0
              np.ones((960, 2), np.int16)]  # one step above silence
    for scale in (1, 10, 300, 3000, 12000, 40000):
        frames.append(np.clip(rng.standard_normal((960, 2)) * scale, -32768, 32767).astype(np.int16))
    tone = np.sin(np.arange(960) / 7.0)[:, None] * 20000 * np.array([1.0, -0.5])  # [960, 2]
    frames.append(np.clip(tone, -32768, 32767).astype(np.int16))
    levels = set()
    for pcm in frames:
        frame = _frame(pcm)
        assert audio_level_dbov(frame) == aiortc_audio_level_dbov(frame), pcm[:2]
        levels.add(audio_level_dbov(frame))
    mono = _frame(rng.integers(-5000, 5000, 480, dtype=np.int16), layout="mono")
    assert audio_level_dbov(mono) == aiortc_audio_level_dbov(mono)
    assert {-127, 0} <= levels and len(levels) >= 8  # the cases span the range


def test_the_app_makes_aiortcs_sender_use_it():
    from streamgen.server.app import create_app
    from streamgen.server.settings import ServerSettings

    create_app(ServerSettings(model="tiny", warmup_blocks=0))
    assert rtp.compute_audio_level_dbov is audio_level_dbov  # what aiortc's RTCRtpSender calls per frame
    assert install()  # again: harmless
    assert aiortc_audio_level_dbov is not audio_level_dbov and aiortc_audio_level_dbov.__module__ == "aiortc.rtp"
