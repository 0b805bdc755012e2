"""The streaming pipeline: a model, its decoder and text encoder, and ``start()`` for sessions.

``load_pipeline(name)`` accepts a preset (random weights; throughput does not depend on them), a
shipped default (weights inside the package) or a checkpoint folder.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from streamgen.actions import ActionSpec
from streamgen.config import ModelConfig
from streamgen.presets import PRESETS, preset
from streamgen.decoders.audio_preview import AudioDecoderConfig, AudioPreviewDecoder, StreamResampler
from streamgen.decoders.preview import PreviewDecoder, PreviewDecoderConfig
from streamgen.models.dit import CausalDiT
from streamgen.samplers import warped_timesteps
from streamgen.session import Session
from streamgen.text import HashTextEncoder

WEIGHTS_DIR = Path(__file__).parent / "weights"


# Prompts whose cross-attention K / V a pipeline keeps; a server's sessions switch among a few prompts,
# and the whole cache is dropped when it overflows (bounded memory for any number of distinct prompts).
PROMPT_CACHE_SIZE = 64


def shipped_models() -> list[str]:
    """Names of the defaults shipped inside the package (folders of ``streamgen/weights``)."""
    if not WEIGHTS_DIR.is_dir():
        return []
    return sorted(p.name for p in WEIGHTS_DIR.iterdir() if (p / "config.json").is_file())


def model_folder(name: str) -> Path | None:
    """The folder a model name loads from: a shipped default's, a checkpoint folder given by path, else None
    (a preset or a generator file); the files shipped beside a model (a feature predictor, an avatar's
    identities) are looked up there."""
    return WEIGHTS_DIR / name if name in shipped_models() else Path(name) if os.path.isdir(name) else None


@dataclass
class Pipeline:
    config: ModelConfig
    model: CausalDiT
    decoder: PreviewDecoder
    text_encoder: object
    device: torch.device
    dtype: torch.dtype
    name: str = "custom"
    # Joint audio-video models: the streaming audio decoder (native rate) and the resampler to the
    # delivery rate; None for silent models.
    audio_decoder: object | None = None
    resampler: StreamResampler | None = None
    # Shipped worlds: real frames / sound / actions that every session is primed with (``Session.prime``),
    # so a stream starts from a real screen: {"video": uint8 [T, H, W, 3], "audio": float32 [S, C] or
    # None, "actions": per-block wire events or None}. None = sessions start from nothing.
    start_context: dict | None = None
    # What was loaded from where (layout, base folder, LoRA, decoder, text encoder), for describe().
    notes: dict = field(default_factory=dict)
    # Image-conditioned models (Matrix-Game 2.0): the start image (uint8 [H, W, 3] or a file) and CLIP tokens
    # (array or .npy / .safetensors / .pt file) of sessions started without their own; streamgen.image_condition.
    start_image: object | None = None
    image_embeds: object | None = None
    image_encoder: object | None = None  # streamgen.image_clip.ClipVision, or None (embeddings given, or a stand-in)
    compiled: bool = False  # the block step runs through torch.compile (streamgen.compile)
    # The speed settings applied to the blocks (``streamgen.acceleration``); None = the model as loaded.
    acceleration: object | None = None
    # The feature cache ``accelerate(feature_cache=...)`` installed (its reuse counters), else None.
    feature_cache: object | None = None

    def __post_init__(self) -> None:
        self.timesteps = warped_timesteps(self.config.denoising_steps, self.config.shift)
        # A side CUDA stream for the video decode, overlapped with the cache refill (Session.step); None on
        # other devices, where the two run one after the other.
        self.decode_stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self._prompt_cache: dict[str | None, list] = {}
        self._action_spec = ActionSpec.from_config(self.config) if self.config.actions is not None else None
        if self.config.audio is not None and (self.audio_decoder is None or self.resampler is None):
            raise ValueError(f"model {self.name!r} generates audio but the pipeline has no audio decoder / resampler")

    # ----- what a client needs to know -------------------------------------------------------
    @property
    def fps(self) -> float:
        return self.config.fps

    @property
    def frames_per_chunk(self) -> int:
        return self.config.frames_per_block * self.config.temporal_upsample

    @property
    def height(self) -> int:
        return self.config.latent_height * self.config.spatial_upsample

    @property
    def width(self) -> int:
        return self.config.latent_width * self.config.spatial_upsample

    @property
    def sample_rate(self) -> int | None:
        """Rate of ``chunk.audio`` (48 kHz for WebRTC), None for silent models."""
        return self.config.audio.output_sample_rate if self.config.audio is not None else None

    @property
    def audio_channels(self) -> int | None:
        return self.config.audio.audio_channels if self.config.audio is not None else None

    @property
    def samples_per_chunk(self) -> int | None:
        """Audio samples per chunk at ``sample_rate``: exactly the chunk's duration times the rate."""
        if self.config.audio is None:
            return None
        return int(self.config.block_seconds * self.config.audio.output_sample_rate)

    @property
    def takes_prompt(self) -> bool:
        return self.config.takes_prompt

    @property
    def action_spec(self) -> ActionSpec | None:
        """Keys, mouse axes and scale the model listens to; None for models without actions."""
        return self._action_spec

    def describe(self) -> dict:
        return {
            "name": self.name, "fps": self.fps, "width": self.width, "height": self.height,
            "frames_per_chunk": self.frames_per_chunk, "sample_rate": self.sample_rate,
            "takes_prompt": self.takes_prompt, "keys": list(self._action_spec.keys) if self._action_spec else [],
            "mouse_axes": list(self._action_spec.mouse_axes) if self._action_spec else [],
            "takes_mouse": bool(self._action_spec and self._action_spec.mouse_axes),
            "audio_channels": self.audio_channels, "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."), "attention_backend": self.model.attention_backend,
            "compiled": self.compiled, "family": self.config.family,
            "acceleration": self.acceleration.describe() if self.acceleration is not None else None,
            "streaming": self.streaming_settings(), **self.notes,
        }

    def streaming_settings(self) -> dict:
        """The cache and sampler settings this pipeline streams with (the family's unless overridden)."""
        c = self.config
        return {"frames_per_block": c.frames_per_block, "window_frames": c.window_frames, "sink_frames": c.sink_frames,
                "rope_mode": c.rope_mode, "denoising_steps": list(c.denoising_steps), "shift": c.shift,
                "timesteps": [round(t, 3) for t in self.timesteps], "context_noise": c.context_noise}

    # ----- sessions ---------------------------------------------------------------------------
    def encode_prompt(self, prompt: str | None) -> list:
        """Per-layer cross-attention K / V for a prompt (cached per pipeline, since it is pure)."""
        hit = self._prompt_cache.get(prompt)
        if hit is None:
            with torch.inference_mode():
                text = self.text_encoder(prompt).to(self.device, self.dtype)
                hit = self.model.encode_text(text)
            if len(self._prompt_cache) > PROMPT_CACHE_SIZE:
                self._prompt_cache.clear()
            self._prompt_cache[prompt] = hit
        return hit

    @property
    def can_prime(self) -> bool:
        """Whether sessions can be primed with real frames (the video decoder has an encoder)."""
        return bool(getattr(self.decoder, "can_encode", False))

    def start(self, seed: int = 0, prompt: str | None = None, *, action_clock: str = "client",
              prime: bool = True, noise=None, image=None, image_embeds=None) -> Session:
        """A new stream. ``action_clock``: how ``t_ms`` of action events is read (``streamgen.actions``):
        "client" (the wire protocol: any client clock) or "stream" (the media clock, for scripts).
        ``noise``: where the session's Gaussian draws come from (``streamgen.noise``): None = one generator
        seeded with ``seed``; a list of ints = a seed per block; or a source callable (``RecordedNoise``
        replays recorded draws), so a stream replays exactly from its inputs.
        ``prime``: start from the pipeline's ``start_context`` when it has one (shipped worlds); the
        context's keys are its past (they stay in the action windows), so the player starts holding none.
        ``image`` / ``image_embeds``: the start image (uint8 ``[H, W, 3]`` or an image file) and its CLIP tokens
        of an image-conditioned model (``streamgen.image_condition``; default: the pipeline's own)."""
        from streamgen.image_condition import load_image

        image = self.start_image if image is None else image
        if isinstance(image, (str, os.PathLike)):
            image = load_image(image)
        session = Session(self, seed=seed, prompt=prompt, action_clock=action_clock, noise=noise, image=image,
                          image_embeds=self.image_embeds if image_embeds is None else image_embeds)
        if prime and self.start_context is not None:
            session.prime(**self.start_context)
            if session.action_state is not None:
                session.action_state.held = frozenset()
        return session


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _random_model(config: ModelConfig, device, dtype, seed: int = 0) -> CausalDiT:
    torch.manual_seed(seed)
    model = CausalDiT(config)
    # Presets carry random weights; small weights on the zero-initialised outputs make the stream
    # depend on the model (not plain noise) and the keys steer it.
    model.wake_outputs(actions=True)
    return model.to(device=device, dtype=dtype).eval()


def load_pipeline(
    name: str,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    *,
    overrides: dict | None = None,
    attention_backend: str | None = None,
    base: str | Path | None = None,
    decoder: str | None = None,
    compile: bool = False,
    matmul_dtype: str | None = None,
    quantize: str | None = None,
    start_image=None,
    image_embeds=None,
    feature_cache=None,
) -> Pipeline:
    """Load a pipeline by preset name, shipped default name, or checkpoint folder / generator file.

    ``base``: the Wan2.1 folder whose VAE and umT5 a student checkpoint uses (else ``"base"`` in its
    ``streamgen.json``). ``decoder``: "vae" (quality), "tiny" (speed) or "preview"; None = the VAE when the
    folder has one, else the tiny decoder, else the preview. ``compile`` / ``matmul_dtype`` / ``quantize`` /
    ``feature_cache``: the transformer blocks' speed settings (``streamgen.acceleration.accelerate``: the
    block step through ``torch.compile``, bf16 linears, dynamic int8 linears, feature caching between
    denoising steps as a ``FeatureCacheSpec`` or ``"reuse@1"``), applied after loading. ``start_image`` /
    ``image_embeds``: an image-conditioned model's default start image file and its CLIP tokens
    (``streamgen.image_condition``).
    """
    pipe = _load(name, device, dtype, overrides, attention_backend, base, decoder)
    if start_image is not None or image_embeds is not None:
        if pipe.config.image_conditioning is None:
            raise ValueError(f"model {name!r} is not image-conditioned: it takes no start image / image embeddings")
        from streamgen.image_condition import load_image

        pipe.start_image = load_image(start_image) if start_image is not None else None
        pipe.image_embeds = image_embeds
    if feature_cache:  # a "learned" cache's predictor: the model folder's unless given
        from streamgen.feature_cache_spec import with_model_folder

        feature_cache = with_model_folder(feature_cache, model_folder(name))
    if compile or matmul_dtype or quantize or feature_cache:
        from streamgen.acceleration import accelerate

        accelerate(pipe, dtype=matmul_dtype, quantize=quantize, compile=compile, feature_cache=feature_cache)
    return pipe


def _load(name, device, dtype, overrides, attention_backend, base, decoder) -> Pipeline:
    device = torch.device(device or default_device())
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    overrides = overrides or {}
    if name in shipped_models():
        pipe = _load_folder(WEIGHTS_DIR / name, device, dtype, overrides, attention_backend, name)
    elif name in PRESETS:
        config = preset(name).with_(**overrides) if overrides else preset(name)
        pipe = random_pipeline(config, device, dtype, attention_backend=attention_backend, name=name)
    elif os.path.exists(name):
        path = Path(name)
        if path.is_dir():
            from streamgen.checkpoints.run_folder import model_folder  # a run / step folder -> its weights

            path = model_folder(path)
        pipe = _load_folder(path, device, dtype, overrides, attention_backend, Path(name).stem if path.is_file() else Path(name).name,
                            base=base, decoder=decoder)
    else:
        raise ValueError(
            f"unknown model {name!r}: not a preset {sorted(PRESETS)}, not a shipped default {shipped_models()}, "
            "and not a checkpoint folder or file"
        )
    return pipe


def random_pipeline(config: ModelConfig, device: str | torch.device | None = None, dtype: torch.dtype | None = None,
                    *, attention_backend: str | None = None, name: str | None = None, seed: int = 0) -> Pipeline:
    """A pipeline of randomly initialised weights (seeded) for ``config``, with the preview decoders."""
    device = torch.device(device or default_device())
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    model = _random_model(config, device, dtype, seed)
    return build_pipeline(config, model, device, dtype, attention_backend, name or config.name)


def model_config(name: str, overrides: dict | None = None) -> ModelConfig:
    """The architecture a name stands for, without weights: a preset, a shipped model (its folder's
    ``config.json``) or one of our checkpoint folders; ``overrides`` on top."""
    if name in PRESETS:
        return preset(name).with_(**overrides) if overrides else preset(name)
    folder = WEIGHTS_DIR / name if name in shipped_models() else Path(name)
    if not (folder / "config.json").is_file():
        raise ValueError(f"model={name!r} is not a preset {sorted(PRESETS)}, not a shipped model {shipped_models()} "
                         "and not a checkpoint folder with config.json")
    from streamgen.checkpoints.io import own_config, read_json

    return own_config(read_json(folder / "config.json"), str(folder), overrides)


def build_pipeline(config, model, device, dtype, attention_backend, name, decoder=None, audio_decoder=None,
                   start_context=None, text_encoder=None, notes=None, decoder_dtype=None, image_encoder=None) -> Pipeline:
    """A pipeline around a built ``model``: the given decoders, else the preview decoders its config pairs with."""
    from streamgen.models.attention import BACKENDS

    if attention_backend is not None and attention_backend not in BACKENDS:
        raise ValueError(f"attention backend {attention_backend!r}: choose one of {BACKENDS}")
    model.attention_backend = attention_backend or "sdpa"
    keep_time_embedding_fp32(model)
    if decoder is None:
        decoder = PreviewDecoder(
            PreviewDecoderConfig(
                latent_channels=config.out_channels,
                temporal_upsample=config.temporal_upsample,
                spatial_upsample=config.spatial_upsample,
            )
        )
    # Trained decoders keep fp32 (small, and their streaming tails need the precision).
    if decoder_dtype is None:
        decoder_dtype = torch.float32 if getattr(decoder, "can_encode", False) else dtype
    decoder = decoder.to(device=device, dtype=decoder_dtype).eval()
    resampler = None
    if config.audio is None:
        audio_decoder = None
    else:
        a = config.audio
        if audio_decoder is None:
            audio_decoder = AudioPreviewDecoder(
                AudioDecoderConfig(latent_channels=a.channels, samples_per_latent=config.audio_samples_per_latent,
                                   sample_rate=a.sample_rate, audio_channels=a.audio_channels))
        audio_decoder = audio_decoder.to(device=device).eval()  # fp32: audio is cheap and tones need the precision
        resampler = StreamResampler(a.sample_rate, a.output_sample_rate, a.audio_channels).to(device=device)
    if text_encoder is None:
        text_encoder = HashTextEncoder(config.text_dim, config.text_len)
    return Pipeline(config, model, decoder, text_encoder, device, dtype, name, audio_decoder, resampler, start_context,
                    dict(notes or {}), image_encoder=image_encoder)


def keep_time_embedding_fp32(model: CausalDiT) -> None:
    """The time embedding and its projection stay fp32 in a bf16 / fp16 model, as Wan keeps them (the
    sinusoid of t near 1000 and the six modulation vectors lose too much in bf16)."""
    for module in (model.time_embedding, model.time_projection):  # shared by the audio stream (model.embed_time)
        module.float()


def _load_folder(path: Path, device, dtype, overrides, attention_backend, name, *, base=None, decoder=None) -> Pipeline:
    from streamgen.checkpoints.components import find_components
    from streamgen.checkpoints.folders import load_checkpoint_dir
    from streamgen.decoders.trained import load_trained_decoders

    comps = find_components(path, base)
    if comps.kind != "streamgen":  # a Wan-family folder or generator file: its own VAE / umT5 / LoRA
        from streamgen.checkpoints.parts import load_parts

        parts = load_parts(comps, device, dtype, overrides, decoder=decoder)
        return build_pipeline(parts.config, parts.model, device, dtype, attention_backend, name, parts.decoder,
                         text_encoder=parts.text_encoder, notes=parts.notes, decoder_dtype=dtype,  # Wan decoders: the model's dtype
                         image_encoder=parts.image_encoder)

    config, model = load_checkpoint_dir(path, device=device, overrides=overrides)
    decoders = load_trained_decoders(path)  # trained autoencoders shipped beside the model, if any
    video_dec, audio_dec = decoders if decoders is not None else (None, None)
    if decoders is not None and config.audio is not None and audio_dec is None:
        raise ValueError(f"{path}: model {config.name!r} generates audio but the folder has a video autoencoder "
                         "and no audio_ae.safetensors")
    context = load_start_context(path / START_CONTEXT_FILE) if (path / START_CONTEXT_FILE).is_file() else None
    return build_pipeline(config, model.to(device=device, dtype=dtype).eval(), device, dtype, attention_backend, name,
                     video_dec, audio_dec, context)


START_CONTEXT_FILE = "start_context.npz"


def load_start_context(path: Path) -> dict:
    """A start context file: ``video`` uint8 [T, H, W, 3], optional ``audio`` float32 [S, C] (native rate)
    and ``keys`` float32 [T, K] (keys held per raw frame, in the model's key order) -> ``Session.prime``
    arguments (the key rows become per-block wire events at the stream clock)."""
    import numpy as np

    with np.load(path) as data:
        ctx = {"video": data["video"], "audio": data["audio"] if "audio" in data.files else None,
               "actions": data["keys"] if "keys" in data.files else None}
    return ctx
