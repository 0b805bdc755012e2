"""The generated streams of a model, and model calls over all of them at once.

A sample is a dict of tensors, one per generated stream: ``latents`` (video ``[B, F, C, H, W]``) always,
and ``audio`` (``[B, Fa, Ca]``) for joint audio-video models. A block spans the same time in every
stream (``frames_per_block`` video frames, ``audio_frames_per_block`` audio frames) and is always at one
noise level, so one video timestep tensor ``[B, F]`` fixes the timesteps of every stream.

Video-only models return a velocity tensor, joint models a ``(video, audio)`` pair; here both come back
as a dict keyed like the sample, so losses, rollouts and trajectories are written once.
"""
from __future__ import annotations

import torch

from streamgen.models.masks import block_causal_mask, expand_to_tokens, teacher_forcing_mask
from streamgen.training.conditioning import Cond

VIDEO, AUDIO = "latents", "audio"


def streams(config) -> tuple[str, ...]:
    return (VIDEO, AUDIO) if config.audio is not None else (VIDEO,)


def block_frames(config, name: str) -> int:
    return config.frames_per_block if name == VIDEO else config.audio_frames_per_block


def stream_frames(config, name: str, video_frames: int) -> int:
    """Frames of stream ``name`` over ``video_frames`` video frames (whole blocks)."""
    return video_frames if name == VIDEO else video_frames // config.frames_per_block * config.audio_frames_per_block


def stream_shape(config, name: str, batch: int, video_frames: int) -> tuple[int, ...]:
    f = stream_frames(config, name, video_frames)
    if name == VIDEO:
        return (batch, f, config.in_channels, config.latent_height, config.latent_width)
    return (batch, f, config.audio.channels)


def stream_t(config, t: torch.Tensor) -> dict[str, torch.Tensor]:
    """Video timesteps ``[B, F]`` (constant inside each block) -> the timesteps of every stream."""
    out = {VIDEO: t}
    if config.audio is not None:
        n, na = config.frames_per_block, config.audio_frames_per_block
        out[AUDIO] = t[:, ::n].repeat_interleave(na, dim=1)  # [B, Fa]
    return out


def sample_of(batch: dict) -> dict[str, torch.Tensor]:
    """The generated streams present in a batch."""
    return {k: batch[k] for k in (VIDEO, AUDIO) if k in batch}


def _as_dict(out) -> dict[str, torch.Tensor]:
    return {VIDEO: out[0], AUDIO: out[1]} if isinstance(out, tuple) else {VIDEO: out}


def predict(model, xs: dict, t: torch.Tensor, cond: Cond, *, mask: torch.Tensor | None = None,
            positions: tuple[int, ...] | None = None) -> dict[str, torch.Tensor]:
    """Full-sequence velocities of every stream (bidirectional with ``mask=None``)."""
    kw = dict(cond.extras)
    if AUDIO in xs:
        kw.update(audio=xs[AUDIO], audio_t=stream_t(model.config, t)[AUDIO])
    return _as_dict(model(xs[VIDEO], t, cond.text_kv, mask=mask, positions=positions, **kw))


def predict_teacher_forcing(model, clean: dict, noisy: dict, t: torch.Tensor, cond: Cond, mask: torch.Tensor) -> dict:
    """Velocities of the noisy half of ``[clean | noisy]`` (the model's teacher-forcing forward)."""
    kw = dict(cond.extras)
    if AUDIO in clean:
        kw.update(audio_clean=clean[AUDIO], audio_noisy=noisy[AUDIO], audio_t=stream_t(model.config, t)[AUDIO])
    return _as_dict(model.forward_teacher_forcing(clean[VIDEO], noisy[VIDEO], t, cond.text_kv, mask, **kw))


def predict_cached(model, xs: dict, t: float | torch.Tensor, cond: Cond, caches: dict, start: int) -> dict[str, torch.Tensor]:
    """One streaming block of every stream at absolute video frame ``start`` (timestep scalar or ``[B]``)."""
    x = xs[VIDEO]
    b, n = x.shape[:2]
    kw = cond.for_block(start, n)
    tv = _block_t(t, b, n, x.device)
    if AUDIO in xs:
        kw.update(audio=xs[AUDIO], audio_t=_block_t(t, b, xs[AUDIO].shape[1], x.device), audio_cache=caches[AUDIO])
    return _as_dict(model.forward_cached(x, tv, cond.text_kv, caches[VIDEO], start, **kw))


def _block_t(t, b: int, n: int, device) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=torch.float32, device=device)
    return t.expand(b, n).clone() if t.dim() == 0 else t.reshape(b, 1).expand(b, n).clone()  # [B, n]


def new_caches(model, batch: int, cache_cls) -> dict:
    """One rolling cache per stream, laid out as the inference session's."""
    param = next(model.parameters())
    cfg = model.config
    caches = {VIDEO: cache_cls(cfg, batch=batch, dtype=param.dtype, device=param.device)}
    if cfg.audio is not None:
        from streamgen.models.audio_video import new_audio_cache

        audio_view = new_audio_cache(cfg, batch=1).config  # the audio stream's cache geometry
        caches[AUDIO] = cache_cls(audio_view, batch=batch, dtype=param.dtype, device=param.device)
    return caches


def causal_mask(config, video_frames: int, device) -> torch.Tensor:
    """The student's block-causal token mask, restricted to its inference windows and sinks."""
    if config.audio is not None:
        from streamgen.models.av_masks import joint_mask_for

        return joint_mask_for(config, video_frames, windowed=True).to(device)
    frames = block_causal_mask(video_frames, config.frames_per_block, window=config.window_frames, sink=config.sink_frames)
    return expand_to_tokens(frames, config.tokens_per_frame).to(device)  # [F*T, F*T]


def teacher_forcing_token_mask(config, video_frames: int, device) -> torch.Tensor:
    """The ``[clean | noisy]`` mask: noisy block i sees clean blocks < i and itself."""
    if config.audio is not None:
        from streamgen.models.av_masks import joint_mask_for

        return joint_mask_for(config, video_frames, teacher_forcing=True).to(device)
    return expand_to_tokens(teacher_forcing_mask(video_frames, config.frames_per_block), config.tokens_per_frame).to(device)
