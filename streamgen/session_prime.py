"""Starting a stream from real media (``Session.prime``): the shipped worlds' start context, an avatar's
reference image.

``prime(session, video, audio, actions)`` encodes the frames (and sound) with the pipeline's autoencoders
and writes them into the session's caches as clean context, block by block at ``context_noise`` (like the
refill after a generated block), with the blocks' actions; the decoders run over the primed latents, so
their streaming state continues from real content; the stream position advances and nothing is emitted.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from streamgen.actions import events_for_rows, split_by_block
from streamgen.block_decode import decode_sessions


@torch.inference_mode()
def prime(session: Any, video: Any, audio: Any = None, actions: Any = None) -> None:
    """Start the stream from real media: encode ``video`` (uint8 ``[T, H, W, 3]``, T a whole number of
    blocks) and ``audio`` (float32 ``[S, C]`` at the decoder's native rate, exactly T frames long; None
    = silence) with the pipeline's autoencoders and write them into the caches as clean context, block
    by block at ``context_noise`` (like the refill), with ``actions`` (None = no key; a list with one
    list of wire events per block; or key rows float ``[T, K]`` per raw frame in the model's key order).
    The decoders run over the primed latents (their streaming state continues from real content); the
    stream position (``next_frame``, ``block_index``) advances; nothing is emitted, so the first
    ``step()`` returns the first generated chunk with ``frame_index`` / ``sample_index`` unchanged."""
    if session.closed:
        raise RuntimeError("prime() on a closed session")
    pipe, cfg = session.pipe, session.config
    if not getattr(pipe.decoder, "can_encode", False):
        raise ValueError(f"model {pipe.name!r} has no video encoder (its decoder {type(pipe.decoder).__name__} "
                         "cannot encode frames); prime() needs a pipeline with trained autoencoders")
    video = np.asarray(video)
    per_block = cfg.frames_per_block * cfg.temporal_upsample
    if video.ndim != 4 or video.shape[0] == 0 or video.shape[0] % per_block:
        raise ValueError(f"prime(): video of shape {video.shape} must be [T, H, W, 3] with T a positive multiple "
                         f"of the {per_block} frames of a block")
    blocks = video.shape[0] // per_block
    x = pipe.decoder.encode(video).to(pipe.device, pipe.dtype)  # [1, F, C, h, w]
    a = None
    if cfg.audio is not None:
        spf = cfg.audio_samples_per_latent * cfg.audio_frames_per_block // per_block  # native samples per frame
        if audio is None:
            audio = np.zeros((video.shape[0] * spf, cfg.audio.audio_channels), np.float32)
        audio = np.asarray(audio, np.float32)
        if audio.shape != (video.shape[0] * spf, cfg.audio.audio_channels):
            raise ValueError(f"prime(): audio of shape {audio.shape} must be [{video.shape[0] * spf}, "
                             f"{cfg.audio.audio_channels}] ({spf} native samples per video frame)")
        if not getattr(pipe.audio_decoder, "can_encode", False):
            raise ValueError(f"model {pipe.name!r} has no audio encoder; prime() needs trained autoencoders")
        a = pipe.audio_decoder.encode(audio).to(pipe.device, pipe.dtype)  # [1, Fa, Ca]
    events = _events(session, actions, blocks)
    n, na = cfg.frames_per_block, (cfg.audio_frames_per_block if cfg.audio is not None else 0)
    for b in range(blocks):
        xb = x[:, b * n : (b + 1) * n]
        ab = a[:, b * na : (b + 1) * na] if a is not None else None
        acts = session.block_actions(events[b])
        session.refill_clean(xb, ab, acts)
        session.remember(xb, ab, acts)
        decode_sessions([session], {"video": xb, "audio": ab})  # the decoders' state continues from real content
        session.block_index += 1
        session.next_frame += n


def _events(session: Any, actions: Any, blocks: int) -> list:
    """``prime()``'s actions as one list of wire events per block."""
    if actions is None or session.action_state is None:
        return [None] * blocks
    if isinstance(actions, np.ndarray):
        spec = session.action_state.spec
        rows = actions.shape[0] if actions.ndim == 2 else -1
        if actions.shape != (rows, len(spec.keys)) or rows != blocks * session.config.frames_per_block * session.config.temporal_upsample:
            raise ValueError(f"prime(): key rows of shape {actions.shape} must be [frames, {len(spec.keys)}] "
                             "with one row per video frame")
        raw_start = session.action_state.next_raw
        evs = events_for_rows(spec, actions, raw_start, session.action_state.held)
        return split_by_block(spec, evs, rows // blocks, blocks, raw_start)
    actions = list(actions)
    if len(actions) != blocks:
        raise ValueError(f"prime(): {len(actions)} action batches for {blocks} blocks; give one per block")
    return actions
