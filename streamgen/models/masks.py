"""Frame-level attention masks (True = may attend) and their expansion to tokens.

Training uses these as dense or FlexAttention block masks; the streaming path needs no mask because
the rolling cache only ever holds what a query may see.
"""
from __future__ import annotations

import torch


def block_index(num_frames: int, frames_per_block: int) -> torch.Tensor:
    """Block id of each frame ``[num_frames]``."""
    return torch.arange(num_frames) // frames_per_block


def block_causal_mask(
    num_frames: int, frames_per_block: int, *, window: int | None = None, sink: int = 0
) -> torch.Tensor:
    """``[F, F]``: full attention inside a block, causal across blocks.

    With ``window`` W (frames, current block included) and ``sink`` S, a query may see the first S frames
    and the last W - S frames ending at the end of its own block (the rolling cache's rule).
    """
    blk = block_index(num_frames, frames_per_block)
    q_end = (blk + 1) * frames_per_block  # exclusive end frame of each query's block
    kv = torch.arange(num_frames)
    mask = kv[None, :] < q_end[:, None]
    if window is not None:
        recent = kv[None, :] >= (q_end[:, None] - (window - sink))
        in_sink = kv[None, :] < sink
        mask = mask & (recent | in_sink)
    return mask


def teacher_forcing_mask(num_frames: int, frames_per_block: int) -> torch.Tensor:
    """``[2F, 2F]`` for the sequence ``[clean F frames | noisy F frames]``.

    Clean frames are block-causal among themselves; noisy block i sees clean blocks < i and itself.
    """
    f = num_frames
    blk = block_index(f, frames_per_block)
    mask = torch.zeros(2 * f, 2 * f, dtype=torch.bool)
    mask[:f, :f] = blk[None, :] <= blk[:, None]
    mask[f:, :f] = blk[None, :] < blk[:, None]
    mask[f:, f:] = blk[None, :] == blk[:, None]
    return mask


def expand_to_tokens(frame_mask: torch.Tensor, tokens_per_frame: int) -> torch.Tensor:
    """Frame mask ``[Fq, Fk]`` to token mask ``[Fq*T, Fk*T]``."""
    return frame_mask.repeat_interleave(tokens_per_frame, 0).repeat_interleave(tokens_per_frame, 1)
