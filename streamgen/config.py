"""Model configuration and presets.

Every shape the model, the cache and the pipeline use (tokens per frame, heads, layers, window)
is derived from :class:`ModelConfig`; nothing is hard-coded elsewhere.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any


@dataclass(kw_only=True)
class ModelConfig:
    """Shapes and streaming settings of one ``CausalDiT`` and its pipeline."""

    name: str = "custom"
    # Latent channels in and out (16 for the Wan VAE).
    in_channels: int = 16
    out_channels: int = 16
    # Transformer width; Wan2.1-1.3B uses 1536.
    dim: int = 1536
    ffn_dim: int = 8960
    num_heads: int = 12
    num_layers: int = 30
    # Sinusoidal timestep embedding width (Wan: 256).
    freq_dim: int = 256
    # Text conditioning: encoder width and number of tokens (umT5-xxl: 4096 x 512).
    text_dim: int = 4096
    text_len: int = 512
    # Patch (t, h, w); Wan uses (1, 2, 2).
    patch: tuple[int, int, int] = (1, 2, 2)
    # Latent grid of one frame (832x480 through the Wan VAE gives 60 x 104).
    latent_height: int = 60
    latent_width: int = 104
    # Streaming: latent frames per block, attention window (incl. sink and current block), sink frames.
    frames_per_block: int = 3
    window_frames: int = 12
    sink_frames: int = 3
    # "absolute": cached keys are stored rotated with their absolute frame index (Wan table of
    # rope_max_positions frames); "relative": keys stored un-rotated, rotated by window position on read.
    rope_mode: str = "absolute"
    rope_max_positions: int = 1024
    rope_theta: float = 10000.0
    eps: float = 1e-6
    qk_norm: bool = True
    cross_attn_norm: bool = True
    # Sampler: nominal few-step timesteps warped by ``shift``; refill noise level for the cache.
    num_train_timesteps: int = 1000
    shift: float = 5.0
    denoising_steps: tuple[float, ...] = (1000.0, 750.0, 500.0, 250.0)
    context_noise: float = 0.0
    # Prompt switch policy: "recache" (LongLive) or "recompute" (Krea, before every block).
    prompt_switch: str = "recache"
    recompute_frames: int = 3
    # Decoder: latent -> pixel upsampling in time (Wan VAE: 4) and space (Wan VAE: 8).
    temporal_upsample: int = 4
    spatial_upsample: int = 8
    # Output frame rate of the decoded stream.
    fps: float = 16.0

    def __post_init__(self) -> None:
        self.patch = tuple(self.patch)
        self.denoising_steps = tuple(float(s) for s in self.denoising_steps)
        self.validate()

    # ----- derived shapes -------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def grid_height(self) -> int:
        return self.latent_height // self.patch[1]

    @property
    def grid_width(self) -> int:
        return self.latent_width // self.patch[2]

    @property
    def tokens_per_frame(self) -> int:
        return self.grid_height * self.grid_width

    @property
    def rope_split(self) -> tuple[int, int, int]:
        """Real dims of the head given to (time, height, width), Wan's rule: d - 4(d//6), 2(d//6), 2(d//6)."""
        d = self.head_dim
        return (d - 4 * (d // 6), 2 * (d // 6), 2 * (d // 6))

    def validate(self) -> None:
        def bad(field_name: str, why: str) -> ValueError:
            return ValueError(f"ModelConfig {self.name!r}: {field_name}={getattr(self, field_name)!r} {why}")

        if self.dim % self.num_heads:
            raise bad("dim", f"is not divisible by num_heads={self.num_heads}")
        if self.head_dim % 2 or any(s % 2 for s in self.rope_split):
            raise bad("num_heads", f"gives head_dim={self.head_dim}, whose RoPE split {self.rope_split} is not even")
        if self.latent_height % self.patch[1] or self.latent_width % self.patch[2]:
            raise bad("patch", f"does not divide the latent grid {self.latent_height}x{self.latent_width}")
        if self.patch[0] != 1:
            raise bad("patch", "must have temporal size 1 (one token row per latent frame)")
        if self.frames_per_block < 1:
            raise bad("frames_per_block", "must be >= 1")
        if self.sink_frames < 0 or self.sink_frames % self.frames_per_block:
            raise bad("sink_frames", f"must be a non-negative multiple of frames_per_block={self.frames_per_block}")
        rolling = self.window_frames - self.sink_frames
        if rolling < self.frames_per_block or rolling % self.frames_per_block:
            raise bad(
                "window_frames",
                f"minus sink_frames={self.sink_frames} must be a positive multiple of "
                f"frames_per_block={self.frames_per_block}",
            )
        if self.rope_mode not in ("absolute", "relative"):
            raise bad("rope_mode", "must be 'absolute' or 'relative'")
        if self.prompt_switch not in ("recache", "recompute"):
            raise bad("prompt_switch", "must be 'recache' or 'recompute'")
        if not self.denoising_steps:
            raise bad("denoising_steps", "must list at least one step")

    # ----- (de)serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig fields {unknown}; known: {sorted(known)}")
        return cls(**data)

    def with_(self, **changes: Any) -> "ModelConfig":
        return replace(self, **changes)


def _tiny() -> ModelConfig:
    # The smallest config that keeps Wan's constraints (head_dim 16 -> RoPE split 8/4/4); for tests.
    return ModelConfig(
        name="tiny", in_channels=4, out_channels=4, dim=64, ffn_dim=128, num_heads=4, num_layers=2,
        freq_dim=32, text_dim=32, text_len=8, latent_height=4, latent_width=4,
        frames_per_block=2, window_frames=6, sink_frames=2, temporal_upsample=1, spatial_upsample=8,
        fps=8.0,
    )


def _wan_1_3b() -> ModelConfig:
    # Wan2.1-T2V-1.3B at 832x480, student settings of Self-Forcing / LongLive (block 3, window 12, sink 3).
    return ModelConfig(name="wan2.1-1.3b", dim=1536, ffn_dim=8960, num_heads=12, num_layers=30)


def _wan_14b() -> ModelConfig:
    return ModelConfig(name="wan2.1-14b", dim=5120, ffn_dim=13824, num_heads=40, num_layers=40)


PRESETS: dict[str, Any] = {
    "tiny": _tiny,
    "wan2.1-1.3b": _wan_1_3b,
    "wan2.1-14b": _wan_14b,
}


def preset(name: str) -> ModelConfig:
    """Return a fresh config for a preset name."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; available: {sorted(PRESETS)}") from None


def register_preset(name: str, factory) -> None:
    """Add a preset (used by the world / audio-video extensions)."""
    PRESETS[name] = factory


__all__ = ["ModelConfig", "PRESETS", "preset", "register_preset", "field"]
