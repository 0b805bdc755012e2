"""Per-stream state and the block loop (Self-Forcing inference).

Each block: start from noise, run the few-step schedule (predict x0, re-noise with fresh noise to the
next level), then one more forward of the clean block at ``context_noise`` to refill the cache; decode
the block with the streaming decoder. Everything a stream owns (cache, RNG, decoder state, recent
clean latents, prompt) lives on the :class:`Session`, never in hidden globals.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from streamgen.decoders.preview import frames_to_uint8
from streamgen.models.kv_cache import RollingKVCache
from streamgen.samplers import add_noise, x0_and_renoise

if TYPE_CHECKING:
    from streamgen.pipeline import Pipeline


@dataclass
class Chunk:
    """One generated block, decoded."""

    video: np.ndarray  # uint8 [T, H, W, 3]
    audio: np.ndarray | None  # float32 [S, C] at sample_rate, or None for silent models
    sample_rate: int | None
    block_index: int
    frame_index: int  # index of the first video frame of the chunk in the stream
    timings: dict[str, float] = field(default_factory=dict)  # seconds


class Session:
    def __init__(self, pipe: "Pipeline", *, seed: int = 0, prompt: str | None = None) -> None:
        self.pipe = pipe
        cfg = pipe.config
        self.config = cfg
        self.generator = torch.Generator(device=pipe.device).manual_seed(seed)
        self.cache = RollingKVCache(cfg, dtype=pipe.dtype, device=pipe.device)
        self.prompt = prompt
        self.text_kv = pipe.encode_prompt(prompt)
        self.decoder_state = pipe.decoder.init_state()
        self.block_index = 0
        self.next_frame = 0  # next latent frame position
        self.video_frames_out = 0
        # Clean latents kept for re-caching: the sink frames and the last ring of frames.
        self.sink_latents: list[torch.Tensor] = []
        self.recent_latents: deque[torch.Tensor] = deque(maxlen=max(cfg.window_frames - cfg.sink_frames, cfg.recompute_frames))
        self.closed = False

    # ----- public API -------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self, actions: Any = None, audio: Any = None) -> Chunk:
        """Generate, cache and decode one block."""
        if self.closed:
            raise RuntimeError("step() on a closed session")
        t0 = time.perf_counter()
        cfg = self.config
        if cfg.prompt_switch == "recompute" and self.next_frame > 0:
            self._rebuild_cache(cfg.recompute_frames)
        x0 = self._denoise_block()
        t1 = time.perf_counter()
        self._refill(x0)
        t2 = time.perf_counter()
        frames, self.decoder_state = self.pipe.decoder.decode(x0, self.decoder_state)
        video = frames_to_uint8(frames[0])
        t3 = time.perf_counter()
        self._remember(x0)
        chunk = Chunk(
            video=video,
            audio=None,
            sample_rate=None,
            block_index=self.block_index,
            frame_index=self.video_frames_out,
            timings={"denoise": t1 - t0, "refill": t2 - t1, "decode": t3 - t2, "total": t3 - t0},
        )
        self.block_index += 1
        self.next_frame += cfg.frames_per_block
        self.video_frames_out += video.shape[0]
        return chunk

    @torch.inference_mode()
    def set_prompt(self, prompt: str | None) -> None:
        """Switch the prompt; the next block is generated under it.

        ``recache`` (LongLive): the cache is rebuilt once from the kept clean latents under the new
        prompt. ``recompute`` (Krea): the cache is rebuilt before every block anyway.
        """
        self.prompt = prompt
        self.text_kv = self.pipe.encode_prompt(prompt)
        if self.config.prompt_switch == "recache" and self.next_frame > 0:
            self._rebuild_cache(len(self.recent_latents))

    def close(self) -> None:
        """Free the cache buffers; the session cannot step afterwards."""
        self.closed = True
        self.cache = None
        self.text_kv = None
        self.sink_latents.clear()
        self.recent_latents.clear()

    # ----- internals --------------------------------------------------------------------------
    def _noise(self, like_shape) -> torch.Tensor:
        return torch.randn(like_shape, generator=self.generator, device=self.pipe.device, dtype=self.pipe.dtype)

    def _timesteps(self, value: float, frames: int) -> torch.Tensor:
        return torch.full((1, frames), value, device=self.pipe.device, dtype=torch.float32)

    def _denoise_block(self) -> torch.Tensor:
        cfg, model = self.config, self.pipe.model
        n = cfg.frames_per_block
        shape = (1, n, cfg.in_channels, cfg.latent_height, cfg.latent_width)
        x = self._noise(shape)
        steps = self.pipe.timesteps
        x0 = x
        for i, t in enumerate(steps):
            v = model.forward_cached(x, self._timesteps(t, n), self.text_kv, self.cache, self.next_frame)
            t_next = steps[i + 1] if i + 1 < len(steps) else 0.0
            x0, x = x0_and_renoise(x, v, t, t_next, self._noise(shape))
        return x0

    def _refill(self, x0: torch.Tensor) -> None:
        """Overwrite the block's K / V with those of its clean latent at ``context_noise``."""
        cfg = self.config
        n = x0.shape[1]
        ctx = add_noise(x0, self._noise(x0.shape), cfg.context_noise) if cfg.context_noise > 0 else x0
        self.pipe.model.forward_cached(ctx, self._timesteps(cfg.context_noise, n), self.text_kv, self.cache, self.next_frame)

    def _remember(self, x0: torch.Tensor) -> None:
        for i in range(x0.shape[1]):
            frame = x0[:, i : i + 1]
            if self.next_frame + i < self.config.sink_frames:
                self.sink_latents.append(frame)
            else:
                self.recent_latents.append(frame)

    def _rebuild_cache(self, recent: int) -> None:
        """Recompute the cache from the sink latents and the last ``recent`` clean frames, block by block,
        under the current prompt, at their original positions (positions and slots as in generation)."""
        cfg, model = self.config, self.pipe.model
        n = cfg.frames_per_block
        recent -= recent % n
        self.cache.reset()
        sink = torch.cat(self.sink_latents, dim=1) if self.sink_latents else None
        kept = list(self.recent_latents)[len(self.recent_latents) - recent :] if recent else []
        tail = torch.cat(kept, dim=1) if kept else None
        replay = []
        if sink is not None:
            replay.append((0, sink))
        if tail is not None:
            replay.append((self.next_frame - tail.shape[1], tail))
        for start, latents in replay:
            for j in range(0, latents.shape[1], n):
                block = latents[:, j : j + n]
                model.forward_cached(block, self._timesteps(cfg.context_noise, block.shape[1]), self.text_kv, self.cache, start + j)
