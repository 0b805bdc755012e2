"""Cross-modal RoPE on physical time.

Both streams are placed on one time axis measured in video latent frames: video latent frame ``f`` is
at ``f``, audio latent frame ``j`` at ``j * video_per_block / audio_per_block`` (the start of its time
span; a block spans the same seconds for both). The time channels of the head rotate by that position
with the video's frequencies, so video-audio logits depend on their time difference only. Audio tokens
have no height / width: those channels are not rotated (angle 0). Sink tokens get the identity rotation
(cos = 1, sin = 0) on every channel: they carry no position.
"""
from __future__ import annotations

from fractions import Fraction

import torch

from streamgen.config import ModelConfig


def audio_time(config: ModelConfig, audio_frame: int) -> float:
    """Physical time of audio latent frame ``audio_frame`` in video latent frames (exact, then float64)."""
    return float(Fraction(audio_frame * config.frames_per_block, config.audio_frames_per_block))


def audio_angles(config: ModelConfig, audio_frames: tuple[int, ...]) -> torch.Tensor:
    """Angles ``[len(audio_frames), head_dim // 2]`` (float64): time channels rotated, height / width not."""
    dt = config.rope_split[0]
    inv_t = 1.0 / config.rope_theta ** (torch.arange(0, dt, 2, dtype=torch.float64) / dt)  # as rope.token_angles
    pos = torch.tensor([audio_time(config, j) for j in audio_frames], dtype=torch.float64)
    ang = torch.zeros(len(audio_frames), config.head_dim // 2, dtype=torch.float64)
    ang[:, : dt // 2] = torch.outer(pos, inv_t)
    return ang


class AudioRope:
    """Cos / sin of audio frames and sinks, cached on the device."""

    def __init__(self, config: ModelConfig, device: torch.device | str = "cpu") -> None:
        self.config, self.device = config, torch.device(device)
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def for_frames(self, frames: tuple[int, ...], sinks: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Cos / sin ``[sinks + len(frames), head_dim // 2]``: ``sinks`` identity rows, then the frames."""
        key = (sinks,) + tuple(frames)
        hit = self._cache.get(key)
        if hit is None:
            ang = audio_angles(self.config, tuple(frames))
            cos, sin = ang.cos().float(), ang.sin().float()
            half = self.config.head_dim // 2
            cos = torch.cat([torch.ones(sinks, half), cos]).to(self.device)
            sin = torch.cat([torch.zeros(sinks, half), sin]).to(self.device)
            if len(self._cache) > 256:
                self._cache.clear()
            hit = self._cache[key] = (cos, sin)
        return hit


def relative_shift_blocks(config: ModelConfig, block: int) -> int:
    """Relative mode: blocks by which the query block ``block`` and every non-sink key are moved back.

    Once the longer of the two rings is full, the oldest block it keeps sits right after the sink blocks,
    so positions stay bounded however long the stream runs (for video alone this is the rank rule of the
    rolling cache). Both modalities move by the same seconds, so cross-modal offsets are unchanged.
    """
    if config.rope_mode != "relative":
        return 0
    nv, na = config.frames_per_block, config.audio_frames_per_block
    audio_window, audio_sink = config.audio_cache_frames()
    ring_blocks = max((config.window_frames - config.sink_frames) // nv, (audio_window - audio_sink) // na)
    return max(0, block - config.sink_frames // nv - ring_blocks + 1)


def shifted(frames, sink: int, shift: int) -> tuple[int, ...]:
    """Frame indices after a relative shift of ``shift`` frames (sink frames keep theirs)."""
    return tuple(f if f < sink else f - shift for f in frames)
