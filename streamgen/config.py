"""Model configuration (the named presets live in ``streamgen.presets``).

Every shape the model, the cache and the pipeline use (tokens per frame, heads, layers, window)
is derived from :class:`ModelConfig`; nothing is hard-coded elsewhere.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from fractions import Fraction
from typing import Any

from streamgen.speech_config import AudioInConfig


@dataclass(kw_only=True)
class ActionConfig:
    """Keyboard / mouse conditioning of a world model (Matrix-Game 2.0 style); see ``streamgen.actions``."""

    # Key names as W3C ``KeyboardEvent.code``; WASD is Matrix-Game 2.0's "universal" vocabulary.
    keys: tuple[str, ...] = ("KeyW", "KeyS", "KeyA", "KeyD")
    # Mouse axes, in the order of the model's mouse input (wire events carry dx, dy in pixels; "-dy" negates).
    mouse_axes: tuple[str, ...] = ("dx", "dy")
    # Model units per pixel of mouse motion in one raw frame; 0.01 maps a 10 px flick to Matrix-Game 2.0's
    # per-frame camera step of 0.1.
    mouse_scale: float = 0.01
    # Latent frames of raw actions each latent frame sees, its own included (1 = exactly its own time span;
    # Matrix-Game 2.0 uses 3, i.e. 12 raw frames). Frames before the stream start are the null action.
    window_frames: int = 1
    # Width of the mouse MLP.
    mouse_hidden: int = 256
    # Leading DiT layers carrying an action module; None = the first half (Matrix-Game 2.0: 15 of 30).
    num_layers: int | None = None
    # "simple": streamgen's module (models/action_modules.py: mouse MLP, frame-local keyboard attention);
    # "matrix-game-2": Matrix-Game 2.0's own (models/mg2_action.py: mouse temporal attention and keyboard
    # attention over per-session caches, RoPE on time). The fields below are its action_config's, only read
    # by it (defaults: the released 1.3B models).
    module: str = "simple"
    hidden_size: int = 128  # keyboard embedding width
    mouse_hidden_dim: int = 1024
    keyboard_hidden_dim: int = 1024
    heads: int = 16
    rope_dims: tuple[int, ...] = (8, 28, 28)  # head split (time, h, w); only time rotates (h = w = 0)
    rope_theta: float = 256.0
    qkv_bias: bool = False

    def __post_init__(self) -> None:
        self.keys = tuple(self.keys)
        self.mouse_axes = tuple(self.mouse_axes)
        if not self.keys and not self.mouse_axes:
            raise ValueError("ActionConfig: keys=() and mouse_axes=() leave nothing to condition on")
        if len(set(self.keys)) != len(self.keys):
            raise ValueError(f"ActionConfig: keys={self.keys!r} has duplicates")
        if self.window_frames < 1:
            raise ValueError(f"ActionConfig: window_frames={self.window_frames!r} must be >= 1")
        if self.num_layers is not None and self.num_layers < 1:
            raise ValueError(f"ActionConfig: num_layers={self.num_layers!r} must be >= 1 or None")
        self.rope_dims = tuple(self.rope_dims)
        if self.module not in ("simple", "matrix-game-2"):
            raise ValueError(f"ActionConfig: module={self.module!r} must be 'simple' or 'matrix-game-2'")
        used = (("mouse_hidden_dim",) if self.mouse_axes else ()) + (("keyboard_hidden_dim",) if self.keys else ())
        for name in used:
            if self.module != "simple" and (getattr(self, name) % self.heads or sum(self.rope_dims) != getattr(self, name) // self.heads):
                raise ValueError(f"ActionConfig: {name}={getattr(self, name)} must be heads={self.heads} x "
                                 f"sum(rope_dims={self.rope_dims})")


@dataclass(kw_only=True)
class ImageConditioning:
    """A start image conditioning every frame, as Wan i2v / Matrix-Game 2.0 do: its CLIP tokens (through
    ``img_emb``) are the cross-attention context, and its encoded latent with a first-frame mask is
    concatenated to the noisy latent (16 + 4 + 16 = 36 input channels); ``streamgen.image_condition``."""

    # CLIP ViT-H/14 token width and count (Wan i2v's image encoder at 224 px: 256 patches + class token).
    clip_dim: int = 1280
    clip_tokens: int = 257
    # First-frame mask channels before the image latent (Wan: one per frame of the VAE's 4x time stride).
    mask_channels: int = 4
    # Matrix-Game 2.0 has no text: the image tokens are the whole cross-attention context.
    with_text: bool = False

    def __post_init__(self) -> None:
        if self.with_text:
            raise ValueError("ImageConditioning: with_text=True (Wan i2v's text + image context) is not built; "
                             "only the image-only context of Matrix-Game 2.0 is")


@dataclass(kw_only=True)
class AudioConfig:
    """Joint audio-video generation (OmniForcing style); see ``streamgen.models.audio_video``.

    A block spans the same seconds for both modalities: ``frames_per_block / (fps / temporal_upsample)``.
    """

    # Audio latent channels; one token per audio latent frame (LTX-2: 128-d tokens).
    channels: int = 128
    # Audio latent frames per second (LTX-2's audio VAE: 25).
    latent_rate: float = 25.0
    # Native rate of the audio decoder (LTX-2's vocoder: 24 kHz).
    sample_rate: int = 24000
    # Rate delivered to clients: Opus over WebRTC runs at 48 kHz.
    output_sample_rate: int = 48000
    # Output channels (1 = mono).
    audio_channels: int = 1
    # Audio cache window and sink in audio latent frames; None = the same seconds as the video cache.
    window_frames: int | None = None
    sink_frames: int | None = None
    # Learnable sink tokens with identity RoPE, visible to every audio query (OmniForcing v1).
    sink_tokens: int = 1

    def __post_init__(self) -> None:
        for name in ("channels", "sample_rate", "output_sample_rate", "audio_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"AudioConfig: {name}={getattr(self, name)!r} must be >= 1")
        if self.latent_rate <= 0:
            raise ValueError(f"AudioConfig: latent_rate={self.latent_rate!r} must be > 0")
        if self.sink_tokens < 0:
            raise ValueError(f"AudioConfig: sink_tokens={self.sink_tokens!r} must be >= 0")


# Fields older checkpoints record that no longer exist; reading such a file ignores them.
# num_train_timesteps: the flow-matching time scale is fixed at samplers.NUM_TRAIN_TIMESTEPS (1000).
RETIRED_FIELDS = frozenset({"num_train_timesteps"})


@dataclass(kw_only=True)
class ModelConfig:
    """Shapes and streaming settings of one ``CausalDiT`` and its pipeline."""

    name: str = "custom"
    # Which released model's streaming settings these are (a key of FAMILIES, or "custom" when the user's
    # own config chose them); reported by Pipeline.describe() and the server's /v1/models.
    family: str = "custom"
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
    # Whether a prompt means anything to the model (the web page hides its prompt box when not); a model
    # trained without captions, like the Atari world, ignores them.
    takes_prompt: bool = True
    # Optional conditioning plug-ins (None = absent): keyboard / mouse actions, joint audio output.
    actions: ActionConfig | None = None
    audio: AudioConfig | None = None
    # A start image conditioning every frame (Matrix-Game 2.0); the patch embedding then reads
    # in_channels + cond_channels.
    image_conditioning: ImageConditioning | None = None
    # Speech in (avatars): the audio that drives the picture (None = absent).
    audio_in: AudioInConfig | None = None

    def __post_init__(self) -> None:
        self.patch = tuple(self.patch)
        self.denoising_steps = tuple(float(s) for s in self.denoising_steps)
        if isinstance(self.actions, dict):
            self.actions = ActionConfig(**self.actions)
        if isinstance(self.audio, dict):
            self.audio = AudioConfig(**self.audio)
        if isinstance(self.image_conditioning, dict):
            self.image_conditioning = ImageConditioning(**self.image_conditioning)
        if isinstance(self.audio_in, dict):
            self.audio_in = AudioInConfig(**self.audio_in)
        self.validate()

    # ----- derived shapes -------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def cond_channels(self) -> int:
        """Channels concatenated to the noisy latent: the first-frame mask and the encoded start image."""
        ic = self.image_conditioning
        return 0 if ic is None else ic.mask_channels + self.out_channels

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

    # ----- time geometry (actions and audio) ----------------------------------------------
    @property
    def block_seconds(self) -> Fraction:
        """Seconds one block spans (exact): ``frames_per_block * temporal_upsample / fps``."""
        return Fraction(self.frames_per_block * self.temporal_upsample) / Fraction(self.fps)

    @property
    def audio_frames_per_block(self) -> int:
        if self.audio is None:
            raise ValueError(f"ModelConfig {self.name!r} has no audio stream")
        return int(self.block_seconds * Fraction(self.audio.latent_rate))

    @property
    def audio_samples_per_latent(self) -> int:
        if self.audio is None:
            raise ValueError(f"ModelConfig {self.name!r} has no audio stream")
        return int(Fraction(self.audio.sample_rate) / Fraction(self.audio.latent_rate))

    @property
    def speech_samples_per_frame(self) -> int:
        """Speech samples (at ``audio_in.sample_rate``) of one latent frame."""
        if self.audio_in is None:
            raise ValueError(f"ModelConfig {self.name!r} has no audio_in")
        return int(self.block_seconds / self.frames_per_block * self.audio_in.sample_rate)

    @property
    def speech_token_dim(self) -> int:
        """Width of one audio token: the mel frames of its span, concatenated."""
        a = self.audio_in
        return self.speech_samples_per_frame // a.tokens_per_frame // a.hop * a.n_mels

    def audio_cache_frames(self) -> tuple[int, int]:
        """(window, sink) of the audio cache in audio latent frames."""
        a, na, n = self.audio, self.audio_frames_per_block, self.frames_per_block
        window = a.window_frames if a.window_frames is not None else self.window_frames // n * na
        sink = a.sink_frames if a.sink_frames is not None else self.sink_frames // n * na
        return window, sink

    def _validate_audio(self, bad) -> None:
        a = self.audio
        per_block = self.block_seconds * Fraction(a.latent_rate)
        if per_block.denominator != 1:
            raise bad("audio", f"latent_rate={a.latent_rate} gives {per_block} audio frames per block of "
                      f"{self.block_seconds} s; it must be a whole number")
        spl = Fraction(a.sample_rate) / Fraction(a.latent_rate)
        if spl.denominator != 1:
            raise bad("audio", f"sample_rate={a.sample_rate} is not a whole number of samples per latent at "
                      f"latent_rate={a.latent_rate}")
        out = self.block_seconds * a.output_sample_rate
        g = math.gcd(a.sample_rate, a.output_sample_rate)
        if out.denominator != 1 or (self.block_seconds * g).denominator != 1:
            raise bad("audio", f"a block of {self.block_seconds} s is not a whole number of resampler frames "
                      f"between {a.sample_rate} Hz and {a.output_sample_rate} Hz")
        na = int(per_block)
        window, sink = self.audio_cache_frames()
        if sink % na or (window - sink) < na or (window - sink) % na:
            raise bad("audio", f"audio cache window={window}, sink={sink} must be multiples of the "
                      f"{na} audio frames per block with window - sink >= {na}")
        if sink // na != self.sink_frames // self.frames_per_block:
            raise bad("audio", f"audio sink of {sink} frames covers {sink // na} blocks but the video sink covers "
                      f"{self.sink_frames // self.frames_per_block}; sinks must cover the same blocks (they are "
                      "replayed jointly on a prompt switch)")

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
        if self.audio is not None:
            self._validate_audio(bad)
        if self.audio_in is not None:
            self.audio_in.check(self, bad)
        if self.actions is not None and self.actions.num_layers is not None and self.actions.num_layers > self.num_layers:
            raise bad("actions", f"puts action modules in {self.actions.num_layers} layers of {self.num_layers}")

    # ----- (de)serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k not in RETIRED_FIELDS}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig fields {unknown}; known: {sorted(known)}")
        return cls(**data)

    def with_(self, **changes: Any) -> "ModelConfig":
        return replace(self, **changes)


# Speed settings of the transformer blocks (streamgen.acceleration; `streamgen bench --dtype / --quantize`).
MATMUL_DTYPES: tuple[str, ...] = ("float32", "bfloat16")
QUANTIZE_MODES: tuple[str, ...] = ("int8",)


__all__ = ["ActionConfig", "AudioConfig", "AudioInConfig", "ImageConditioning", "ModelConfig", "field"]
