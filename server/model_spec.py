"""What a loaded model streams and accepts, as the server tells clients (``/v1/models``, ``started``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streamgen_client import protocol as P

from .avatar_input import AvatarInput
from .capacity import StreamShape


@dataclass(frozen=True)
class ModelSpec:
    """What a loaded model streams and accepts (from ``pipe.describe()``)."""

    name: str
    fps: float
    width: int
    height: int
    frames_per_block: int
    sample_rate: int | None
    channels: int
    keys: tuple[str, ...]
    takes_mouse: bool
    takes_prompt: bool
    # Avatars: (sample rate, samples per latent frame, latent frames per block, look-ahead radius) of speech in.
    speech_in: tuple[int, int, int, int] | None = None

    @classmethod
    def from_pipeline(cls, name: str, pipe: Any) -> "ModelSpec":
        d = pipe.describe()
        sr = d.get("sample_rate")
        channels = int(d.get("audio_channels") or d.get("channels") or 1) if sr else 0
        takes_mouse = bool(d.get("takes_mouse", False) or d.get("mouse_axes"))
        config = getattr(pipe, "config", None)
        a = getattr(config, "audio_in", None)
        speech_in = None
        if a is not None:  # audio out = the driving speech, mono at the speech-in rate
            speech_in = (a.sample_rate, config.speech_samples_per_frame, config.frames_per_block, a.radius)
            sr, channels = a.sample_rate, 1
        return cls(name=name, fps=float(d["fps"]), width=int(d["width"]), height=int(d["height"]),
                   frames_per_block=int(d["frames_per_chunk"]), sample_rate=int(sr) if sr else None,
                   channels=channels, keys=tuple(d.get("keys") or ()), takes_mouse=takes_mouse,
                   takes_prompt=bool(d.get("takes_prompt", False)), speech_in=speech_in)

    def avatar_input(self) -> AvatarInput | None:
        if self.speech_in is None:
            return None
        rate, spf, fpb, radius = self.speech_in
        return AvatarInput(sample_rate=rate, samples_per_frame=spf, frames_per_block=fpb, radius=radius)

    @property
    def shape(self) -> StreamShape:
        return StreamShape(fps=self.fps, frames_per_block=self.frames_per_block)

    def check_prompt(self, prompt: str | None, seq: int | None = None) -> None:
        """A prompt (at start or later) for a model that takes none is refused (out_of_range)."""
        if prompt is not None and not self.takes_prompt:
            raise P.ProtocolError("out_of_range", f"model {self.name!r} takes no prompt", seq)

    @property
    def takes_actions(self) -> bool:
        """Models that declare no action spec accept (and ignore) any well-formed action."""
        return bool(self.keys) or self.takes_mouse

    def info(self) -> P.ModelInfo:
        return P.ModelInfo(name=self.name, fps=self.fps, width=self.width, height=self.height,
                           frames_per_block=self.frames_per_block, sample_rate=self.sample_rate,
                           channels=self.channels, keys=list(self.keys), takes_mouse=self.takes_mouse,
                           takes_prompt=self.takes_prompt,
                           audio_in_rate=self.speech_in[0] if self.speech_in else None)
