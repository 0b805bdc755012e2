"""Masks of the joint audio-video sequence (True = may attend).

Token order of a joint sequence: the video tokens (frame-major, ``tokens_per_frame`` each), then the
audio sink tokens, then one token per audio latent frame. In teacher forcing each modality is
``[clean | noisy]`` (sinks once, before the clean audio).

Rules, the same in all four directions (v->v, v->a, a->v, a->a):
- a clean query in block b sees clean keys of blocks <= b (bidirectional inside its block);
- a noisy query in block b sees clean keys of blocks < b and noisy keys of block b;
- with a window, a key frame of modality m is visible only if it lies in the last ``W_m - S_m`` frames
  ending at the end of the query's block, or among the first ``S_m`` frames (that modality's rolling
  cache rule);
- sink tokens see only sink tokens; every audio query sees the sinks (video queries do not).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

VIDEO, AUDIO, SINK = 0, 1, 2


@dataclass(frozen=True)
class AVLayout:
    """Per-token descriptors ``[L]`` of a joint sequence."""

    modality: torch.Tensor  # VIDEO / AUDIO / SINK
    block: torch.Tensor  # block index (-1 for sinks)
    frame: torch.Tensor  # frame index within its modality (-1 for sinks)
    noisy: torch.Tensor  # bool: the noisy half of a teacher-forcing sequence

    def __len__(self) -> int:
        return self.modality.shape[0]


def av_layout(
    video_frames: int,
    audio_frames: int,
    *,
    tokens_per_frame: int,
    video_per_block: int,
    audio_per_block: int,
    sink_tokens: int,
    teacher_forcing: bool = False,
) -> AVLayout:
    """Descriptors of ``video_frames`` video and ``audio_frames`` audio frames (each half in teacher forcing)."""
    halves = (False, True) if teacher_forcing else (False,)
    mod, blk, frm, noisy = [], [], [], []

    def add(m: int, frames: torch.Tensor, per_block: int, repeat: int, is_noisy: bool) -> None:
        f = frames.repeat_interleave(repeat)
        mod.append(torch.full_like(f, m))
        blk.append(f // per_block)
        frm.append(f)
        noisy.append(torch.full(f.shape, is_noisy))

    for half in halves:
        add(VIDEO, torch.arange(video_frames), video_per_block, tokens_per_frame, half)
    if sink_tokens:
        mod.append(torch.full((sink_tokens,), SINK))
        blk.append(torch.full((sink_tokens,), -1))
        frm.append(torch.full((sink_tokens,), -1))
        noisy.append(torch.zeros(sink_tokens, dtype=torch.bool))
    for half in halves:
        add(AUDIO, torch.arange(audio_frames), audio_per_block, 1, half)
    return AVLayout(torch.cat(mod), torch.cat(blk), torch.cat(frm), torch.cat(noisy))


def av_mask(
    layout: AVLayout,
    *,
    video_per_block: int,
    audio_per_block: int,
    video_window: int | None = None,
    video_sink: int = 0,
    audio_window: int | None = None,
    audio_sink: int = 0,
) -> torch.Tensor:
    """Token mask ``[L, L]`` of a joint sequence (see the module doc for the rules)."""
    qm, km = layout.modality[:, None], layout.modality[None, :]
    qb, kb = layout.block[:, None], layout.block[None, :]
    qn, kn = layout.noisy[:, None], layout.noisy[None, :]
    clean_rule = ~kn & (kb <= qb)
    noisy_rule = (~kn & (kb < qb)) | (kn & (kb == qb))
    mask = torch.where(qn, noisy_rule, clean_rule)
    kf = layout.frame[None, :]
    for m, window, sink, per_block in ((VIDEO, video_window, video_sink, video_per_block), (AUDIO, audio_window, audio_sink, audio_per_block)):
        if window is None:
            continue
        end = (qb + 1) * per_block  # exclusive end (in this key modality's frames) of the query's block
        keep = (kf >= end - (window - sink)) | (kf < sink)
        mask = mask & ((km != m) | keep)
    sink_key, sink_query = km == SINK, qm == SINK
    mask = torch.where(sink_key, (qm == AUDIO) | sink_query, mask)
    mask = torch.where(sink_query, sink_key, mask)
    return mask


def joint_mask_for(config, video_frames: int, *, teacher_forcing: bool = False, windowed: bool = False) -> torch.Tensor:
    """The token mask of a joint model over ``video_frames`` video frames and the audio frames of the same
    blocks (training and tests): block-causal, or teacher forcing, optionally with both caches' windows."""
    nv, na = config.frames_per_block, config.audio_frames_per_block
    if video_frames % nv:
        raise ValueError(f"video_frames={video_frames} is not a whole number of {nv}-frame blocks")
    layout = av_layout(video_frames, video_frames // nv * na, tokens_per_frame=config.tokens_per_frame,
                       video_per_block=nv, audio_per_block=na, sink_tokens=config.audio.sink_tokens,
                       teacher_forcing=teacher_forcing)
    if not windowed:
        return av_mask(layout, video_per_block=nv, audio_per_block=na)
    audio_window, audio_sink = config.audio_cache_frames()
    return av_mask(layout, video_per_block=nv, audio_per_block=na, video_window=config.window_frames,
                   video_sink=config.sink_frames, audio_window=audio_window, audio_sink=audio_sink)
