"""The released Wan2.1 students' own streaming settings (``ModelConfig.family``; docs/checkpoints.md).

A student was distilled and evaluated with one cache layout and one step list; these are the values of
each one's public inference config. ``streamgen.checkpoints.family_detect`` decides which one a
checkpoint is and applies it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True)
class Family:
    """The streaming settings a released student was distilled and evaluated with (its public config)."""

    name: str
    # ModelConfig fields the family fixes (block, window, sink, sampler, RoPE).
    settings: dict[str, Any]
    # Whether its inference reads generator_ema (True) or generator (False) from a training checkpoint.
    ema: bool
    # Where the numbers come from, said in the log line and in describe().
    source: str
    # True when the released model attends to every frame it generates (its whole clip fits the window).
    global_attention: bool = False

    def summary(self) -> str:
        s = self.settings
        window = (f"global attention over {s['window_frames']} frames (no sink)" if self.global_attention
                  else f"window {s['window_frames']}, sink {s['sink_frames']}")
        return (f"{self.name}: block {s['frames_per_block']}, {window}, steps {list(s['denoising_steps'])} "
                f"shift {s['shift']} ({self.source})")


def _streaming(block: int, window: int, sink: int, steps: tuple[float, ...], shift: float) -> dict[str, Any]:
    return {"frames_per_block": block, "window_frames": window, "sink_frames": sink, "denoising_steps": steps,
            "shift": shift, "context_noise": 0.0, "rope_mode": "absolute"}


# The released Wan2.1-1.3B students. A shift of 1 leaves the listed steps as they are (CausVid does not warp).
FAMILIES: dict[str, Family] = {
    "self-forcing": Family(
        name="self-forcing", ema=True, global_attention=True, settings=_streaming(3, 21, 0, (1000.0, 750.0, 500.0, 250.0), 5.0),
        source="Self-Forcing configs/self_forcing_dmd.yaml: blocks of 3, local_attn_size -1 over its 21 latent frames"),
    "longlive": Family(
        name="longlive", ema=False, settings=_streaming(3, 12, 3, (1000.0, 750.0, 500.0, 250.0), 5.0),
        source="LongLive configs/longlive_inference.yaml: local_attn_size 12, sink_size 3, use_ema false"),
    "causvid": Family(
        name="causvid", ema=True, global_attention=True, settings=_streaming(3, 21, 0, (1000.0, 757.0, 522.0), 1.0),
        source="CausVid configs/wan_causal_dmd.yaml: steps 1000/757/522 unwarped, a 21-frame cache"),
    "matrix-game-2": Family(
        # its 352 x 640 frames (44 x 80 latents, 880 tokens per frame)
        name="matrix-game-2", ema=False, settings={**_streaming(3, 6, 0, (1000.0, 666.0, 333.0), 5.0), "latent_height": 44,
                                                   "latent_width": 80},
        source="Matrix-Game 2.0 inference_universal.yaml and config.json: local_attn_size 6, sink_size 0"),
    "wan2.1": Family(
        name="wan2.1", ema=True, settings=_streaming(3, 12, 3, (1000.0, 750.0, 500.0, 250.0), 5.0),
        source="a Wan2.1 base model is not a few-step student: it streams with the LongLive settings"),
}


def family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown family {name!r}; known: {sorted(FAMILIES)}") from None
