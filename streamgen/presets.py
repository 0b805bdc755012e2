"""The named model configs (``streamgen generate --model tiny`` and friends).

Each preset is a function returning a fresh :class:`~streamgen.config.ModelConfig`, so callers may
change what they get without touching anyone else's copy.
"""
from __future__ import annotations

from typing import Any

from streamgen.config import ActionConfig, AudioConfig, ModelConfig
from streamgen.speech_config import AudioInConfig


def _tiny() -> ModelConfig:
    # The smallest config that keeps Wan's constraints (head_dim 16 -> RoPE split 8/4/4); for tests.
    return ModelConfig(
        name="tiny", in_channels=4, out_channels=4, dim=64, ffn_dim=128, num_heads=4, num_layers=2,
        freq_dim=32, text_dim=32, text_len=8, latent_height=4, latent_width=4,
        frames_per_block=2, window_frames=6, sink_frames=2, temporal_upsample=1, spatial_upsample=8,
        # relative RoPE so a tiny stream can run for hours (the invariant tests also pin "absolute").
        rope_mode="relative", fps=8.0,
    )


def _wan_1_3b() -> ModelConfig:
    # Wan2.1-T2V-1.3B at 832x480, student settings of Self-Forcing / LongLive (block 3, window 12, sink 3).
    return ModelConfig(name="wan2.1-1.3b", dim=1536, ffn_dim=8960, num_heads=12, num_layers=30)


def _wan_14b() -> ModelConfig:
    return ModelConfig(name="wan2.1-14b", dim=5120, ffn_dim=13824, num_heads=40, num_layers=40)


def _tiny_av() -> ModelConfig:
    # tiny plus a joint audio stream: blocks of 2 video latents (4 raw frames each at 16 fps) = 0.5 s,
    # i.e. 8 audio latents at 16 latents/s, decoded at 16 kHz and delivered at 48 kHz. The RoPE table
    # is unbounded in effect because the weights are random (no pretrained position range to respect).
    return ModelConfig(
        name="tiny-av", in_channels=4, out_channels=4, dim=64, ffn_dim=128, num_heads=4, num_layers=2,
        freq_dim=32, text_dim=32, text_len=8, latent_height=4, latent_width=4,
        frames_per_block=2, window_frames=6, sink_frames=2, temporal_upsample=4, spatial_upsample=8,
        fps=16.0, rope_max_positions=1 << 24,
        audio=AudioConfig(channels=8, latent_rate=16.0, sample_rate=16000, output_sample_rate=48000),
    )


def _tiny_world() -> ModelConfig:
    # tiny-av plus WASD keys and mouse (dx, dy); each latent frame sees the 4 raw frames it spans.
    return _tiny_av().with_(name="tiny-world", actions=ActionConfig(mouse_hidden=32))


def _mid() -> ModelConfig:
    # The CPU fast path's benchmark config (benchmarks/cpu_fastpath.py): big enough that the matrix
    # products dominate a block (dim 512, 8 layers), 64 tokens per latent frame (16x16 latents, 2x2 patches),
    # blocks of 3 latent frames in a window of 12, 4 steps + the cache refill.
    return ModelConfig(
        name="mid", in_channels=16, out_channels=16, dim=512, ffn_dim=1536, num_heads=8, num_layers=8,
        text_dim=64, text_len=8, latent_height=16, latent_width=16, frames_per_block=3, window_frames=12,
        sink_frames=3, temporal_upsample=1, spatial_upsample=4, fps=16.0, rope_mode="relative",
        rope_max_positions=1 << 24,
    )


def _avatar() -> ModelConfig:
    # A talking face at 64x64, 16 fps (docs/models.md, "Avatars"): the world's video autoencoder shape
    # (4 x 16 x 16 latents per 2 frames, 64 tokens with 2x2 patches), blocks of 2 latent frames = 0.25 s,
    # speech in with +-2 latent frames of context. The first block (the sink) holds the reference image;
    # the ring keeps 1 s. Sized like `world` (which streams in real time on a 2-core CPU), a little wider.
    return ModelConfig(
        name="avatar", in_channels=4, out_channels=4, dim=128, ffn_dim=384, num_heads=4, num_layers=4,
        freq_dim=64, text_dim=32, text_len=4, latent_height=16, latent_width=16,
        frames_per_block=2, window_frames=10, sink_frames=2, temporal_upsample=2, spatial_upsample=4,
        fps=16.0, rope_mode="relative", rope_max_positions=1 << 24, shift=3.0,
        denoising_steps=(1000.0, 666.7, 333.3), takes_prompt=False, audio_in=AudioInConfig(),
    )


def _tiny_avatar() -> ModelConfig:
    # tiny with speech in (tests): 8 fps, 1 pixel frame per latent, 2000 samples per latent frame.
    return _tiny().with_(name="tiny-avatar", takes_prompt=False, audio_in=AudioInConfig(n_mels=8))


PRESETS: dict[str, Any] = {
    "avatar": _avatar,
    "mid": _mid,
    "tiny": _tiny,
    "tiny-av": _tiny_av,
    "tiny-avatar": _tiny_avatar,
    "tiny-world": _tiny_world,
    "wan2.1-1.3b": _wan_1_3b,
    "wan2.1-14b": _wan_14b,
}


def preset(name: str) -> ModelConfig:
    """Return a fresh config for a preset name."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; available: {sorted(PRESETS)}") from None


__all__ = ["PRESETS", "preset"]
