"""The rolling KV cache of a streaming session.

Layout: per layer, K and V buffers ``[B, window_frames * tokens_per_frame, H, D]`` allocated once.
Frame slots ``[0, sink)`` hold the sink frames (absolute frames ``0 .. sink-1``); slots
``[sink, window)`` are a ring of ``window - sink`` frames. A block is written in place before its
attention; re-running a block (denoising steps, the clean refill) finds its frames already placed and
overwrites the same slots. A new block takes the oldest ring slots (eviction without copies). Because
slots fill in order, the valid slots are always a prefix, so attention reads ``k[:, :valid_tokens]``
with no mask, and every pointer is a host integer: the step never syncs with the device.

RoPE modes: ``absolute`` stores rotated keys (rotated once, at their absolute frame index);
``relative`` stores un-rotated keys and rotates them at read time by their rank in the window, so a
stream can outlive the RoPE table.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from streamgen.config import ModelConfig


@dataclass(frozen=True)
class CacheWrite:
    """Where one forward of a block writes and what its attention reads (all host ints)."""

    slot_start: int  # first token slot of the block
    num_tokens: int  # tokens written
    valid_tokens: int  # attention reads slots [0, valid_tokens)
    # Relative mode: window position of every valid frame slot (slot order) and of the block's frames.
    key_positions: tuple[int, ...] | None
    query_positions: tuple[int, ...] | None


class RollingKVCache:
    """Static K / V buffers with sink + ring bookkeeping for ``num_layers`` layers."""

    def __init__(
        self,
        config: ModelConfig,
        *,
        batch: int = 1,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        num_layers: int | None = None,
    ) -> None:
        self.config = config
        self.tokens_per_frame = config.tokens_per_frame
        self.window = config.window_frames
        self.sink = config.sink_frames
        self.ring = self.window - self.sink
        self.relative = config.rope_mode == "relative"
        layers = config.num_layers if num_layers is None else num_layers
        shape = (layers, batch, self.window * self.tokens_per_frame, config.num_heads, config.head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.reset()

    def reset(self) -> None:
        """Forget every frame (buffers are kept and will be overwritten)."""
        self.frame_at_slot: list[int] = [-1] * self.window  # absolute frame held by each frame slot
        self.slot_of_frame: dict[int, int] = {}
        self.block_size: dict[int, int] = {}  # start frame -> frames, for every block still cached
        self.ring_count = 0  # ring frames written since reset; the next ring slot is sink + ring_count % ring
        self.end_frame = 0  # one past the largest absolute frame written (the "global end")

    @property
    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2

    @property
    def valid_frames(self) -> int:
        return sum(1 for f in self.frame_at_slot if f >= 0)

    def plan(self, start_frame: int, num_frames: int) -> CacheWrite:
        """Place frames ``start_frame .. start_frame + num_frames - 1`` and return the write / read plan."""
        if num_frames < 1 or num_frames > self.ring and start_frame >= self.sink:
            raise ValueError(f"block of {num_frames} frames does not fit a ring of {self.ring} frames")
        frames = range(start_frame, start_frame + num_frames)
        placed = [f in self.slot_of_frame for f in frames]
        if all(placed):
            if self.block_size.get(start_frame) != num_frames:
                raise ValueError(
                    f"frames {start_frame}..{start_frame + num_frames - 1} were not written as one block; "
                    "re-run blocks whole, at their original start"
                )
            slot0 = self.slot_of_frame[start_frame]
        elif any(placed):
            raise ValueError(f"block at frame {start_frame} overlaps a cached block partially; blocks must be re-run whole")
        else:
            slot0 = self._place_new(start_frame, num_frames)
        valid = self.valid_frames
        if any(f < 0 for f in self.frame_at_slot[:valid]):
            raise AssertionError(f"cache slots are not a prefix: {self.frame_at_slot}")
        key_pos = query_pos = None
        if self.relative:
            held = self.frame_at_slot[:valid]
            rank = {f: i for i, f in enumerate(sorted(held))}
            key_pos = tuple(rank[f] for f in held)
            query_pos = tuple(rank[f] for f in frames)
        tpf = self.tokens_per_frame
        return CacheWrite(slot0 * tpf, num_frames * tpf, valid * tpf, key_pos, query_pos)

    def _place_new(self, start_frame: int, num_frames: int) -> int:
        if start_frame < self.end_frame and start_frame >= self.sink:
            raise ValueError(
                f"frame {start_frame} was already evicted (cache end is {self.end_frame}); "
                "only the newest blocks can be re-run"
            )
        if start_frame + num_frames <= self.sink:
            slot0 = start_frame  # sink frames keep their own slots
        elif start_frame < self.sink:
            raise ValueError(f"block at frame {start_frame} straddles the sink of {self.sink} frames")
        else:
            slot0 = self.sink + self.ring_count % self.ring
            if slot0 + num_frames > self.window:
                raise ValueError(
                    f"block of {num_frames} frames at ring slot {slot0} would wrap the ring of {self.ring}; "
                    "window - sink must be a multiple of the block size"
                )
            self.ring_count += num_frames
        for i in range(num_frames):
            old = self.frame_at_slot[slot0 + i]
            if old >= 0:
                del self.slot_of_frame[old]  # eviction: the oldest ring frame gives its slot
                self.block_size.pop(old, None)
            self.frame_at_slot[slot0 + i] = start_frame + i
            self.slot_of_frame[start_frame + i] = slot0 + i
        self.block_size[start_frame] = num_frames
        self.end_frame = max(self.end_frame, start_frame + num_frames)
        return slot0

    def write(self, layer: int, plan: CacheWrite, k: torch.Tensor, v: torch.Tensor) -> None:
        """Write a block's K / V ``[B, num_tokens, H, D]`` into its slots, in place."""
        s, e = plan.slot_start, plan.slot_start + plan.num_tokens
        self.k[layer, :, s:e].copy_(k)
        self.v[layer, :, s:e].copy_(v)

    def read(self, layer: int, plan: CacheWrite) -> tuple[torch.Tensor, torch.Tensor]:
        """K / V views ``[B, valid_tokens, H, D]`` of what the block may attend to."""
        return self.k[layer, :, : plan.valid_tokens], self.v[layer, :, : plan.valid_tokens]

    def snapshot_pointers(self) -> tuple:
        return (tuple(self.frame_at_slot), self.ring_count, self.end_frame)
