"""``AudioInConfig``: the speech-in sub-config of ``ModelConfig`` (avatars); see ``streamgen.audio_features``
and ``streamgen.models.audio_in``. A leaf module (``streamgen.config`` imports it)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(kw_only=True)
class AudioInConfig:
    """Speech in (avatars): log-mel features of 16 kHz audio, frame-local cross-attention; see
    ``streamgen.audio_features`` and ``streamgen.models.audio_in``.

    Latent frame ``f`` sees the speech of latent frames ``f - radius .. f + radius``, so a stream needs
    ``radius`` latent frames of audio look-ahead before it can generate a frame.
    """

    # 16 kHz: what speech codecs and espeak-ng (resampled) deliver; plenty for the mouth's cues.
    sample_rate: int = 16000
    # 25 ms windows (the usual speech analysis window), hop 12.5 ms: 10 mel frames per 125 ms latent frame
    # of the avatar preset; the hop must divide the samples of one token.
    n_fft: int = 400
    hop: int = 200
    # 32 mel bands: enough to tell vowels (formants) and closures apart; small token width.
    n_mels: int = 32
    # Audio tokens per latent frame (each the concatenated mel frames of its span): 2 = one per pixel
    # frame of a latent frame that packs two.
    tokens_per_frame: int = 2
    # Latent frames of context each side (LiveTalk / audio-driven avatars use +-2).
    radius: int = 2
    # Leading DiT layers carrying the audio module; None = all (the mouth is drawn by every layer).
    num_layers: int | None = None

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_fft", "hop", "n_mels", "tokens_per_frame"):
            if getattr(self, name) < 1:
                raise ValueError(f"AudioInConfig: {name}={getattr(self, name)!r} must be >= 1")
        if self.radius < 0:
            raise ValueError(f"AudioInConfig: radius={self.radius!r} must be >= 0")
        if self.n_fft < self.hop:
            raise ValueError(f"AudioInConfig: n_fft={self.n_fft!r} must be >= hop={self.hop}")
        if self.num_layers is not None and self.num_layers < 1:
            raise ValueError(f"AudioInConfig: num_layers={self.num_layers!r} must be >= 1 or None")

    @property
    def window_tokens(self) -> int:
        """Audio tokens one latent frame attends to: ``(2 radius + 1) * tokens_per_frame``."""
        return (2 * self.radius + 1) * self.tokens_per_frame

    def check(self, model: Any, bad: Callable[[str, str], ValueError]) -> None:
        """Refuse a ``ModelConfig`` whose latent frame is not a whole number of samples and tokens."""
        per_frame = model.block_seconds / model.frames_per_block * self.sample_rate
        if per_frame.denominator != 1:
            raise bad("audio_in", f"sample_rate={self.sample_rate} gives {per_frame} samples per latent frame of "
                      f"{model.block_seconds / model.frames_per_block} s; it must be a whole number")
        if int(per_frame) % (self.tokens_per_frame * self.hop):
            raise bad("audio_in", f"{int(per_frame)} samples per latent frame are not a whole number of "
                      f"tokens_per_frame={self.tokens_per_frame} x hop={self.hop}")
        if model.audio is not None:
            raise bad("audio_in", "with a joint audio stream (audio) is not supported: the avatar's sound is its input")
        if self.num_layers is not None and self.num_layers > model.num_layers:
            raise bad("audio_in", f"puts audio modules in {self.num_layers} layers of {model.num_layers}")
