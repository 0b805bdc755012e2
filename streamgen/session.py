"""Per-stream state around the one block loop (Self-Forcing inference, `streamgen.block_loop`).

Each block: start from noise, run the few-step schedule (predict x0, re-noise with fresh noise to the
next level), then one more forward of the clean block at ``context_noise`` to refill the cache; decode
the block with the streaming decoder. Everything a stream owns (cache, RNG, decoder state, recent
clean latents, prompt) lives on the :class:`Session`, never in hidden globals.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np
import torch

from streamgen import block_loop
from streamgen.actions import ActionState
from streamgen.audio_features import SpeechInput
from streamgen.block_decode import Decoded, beside_refill, decode_sessions
from streamgen.identity import copy_sink_slots, reference_frames
from streamgen.config import ModelConfig
from streamgen.decoders.preview import frames_to_uint8
from streamgen.image_condition import stream_conditioning
from streamgen.models.action_modules import ActionInput
from streamgen.models.audio_video import new_audio_cache
from streamgen.models.kv_cache import RollingKVCache
from streamgen.noise import noise_source
from streamgen.session_prime import prime


class SessionSource(Protocol):
    """What a session reads from the pipeline that starts it (``streamgen.pipeline.Pipeline`` is one;
    the session does not import it, so the two files do not import each other)."""

    config: ModelConfig
    model: Any  # CausalDiT
    decoder: Any  # streaming video decoder
    audio_decoder: Any  # streaming audio decoder, None for silent models
    resampler: Any  # to the delivery rate, None for silent models
    device: torch.device
    dtype: torch.dtype
    name: str
    timesteps: tuple[float, ...]

    @property
    def sample_rate(self) -> int | None: ...

    @property
    def action_spec(self) -> Any: ...

    def encode_prompt(self, prompt: str | None) -> list: ...


@dataclass
class Chunk:
    """One generated block, decoded."""

    video: np.ndarray  # uint8 [T, H, W, 3]
    audio: np.ndarray | None  # float32 [S, C] at sample_rate, or None for silent models
    sample_rate: int | None
    block_index: int
    frame_index: int  # index of the first video frame of the chunk in the stream
    timings: dict[str, float] = field(default_factory=dict)  # seconds
    sample_index: int | None = None  # index of the chunk's first audio sample in the stream (at sample_rate)


class Session:
    def __init__(self, pipe: SessionSource, *, seed: int = 0, prompt: str | None = None, action_clock: str = "client",
                 noise: Any = None, image: Any = None, image_embeds: Any = None) -> None:
        self.pipe = pipe
        cfg = pipe.config
        self.config = cfg
        # Every Gaussian draw goes through this source (streamgen.noise): replayable from the inputs.
        self.noise_source = noise_source(seed, noise, pipe.device)
        self.cache = RollingKVCache(cfg, dtype=pipe.dtype, device=pipe.device)
        self.prompt = prompt
        # Image-conditioned / Matrix-Game 2.0 models: the start image's context and latent condition, and the
        # action modules' caches (streamgen.image_condition); None for other models.
        self.conditioning = stream_conditioning(pipe, image, image_embeds)
        image_kv = self.conditioning.context_kv if self.conditioning is not None else None
        self.text_kv = image_kv if image_kv is not None else pipe.encode_prompt(prompt)
        self.decoder_state = pipe.decoder.init_state()
        self.block_index = 0
        self.next_frame = 0  # next latent frame position
        self.video_frames_out = 0
        # Clean latents kept for re-caching: the sink frames and the last ring of frames.
        self.sink_latents: list[torch.Tensor] = []
        self.recent_latents: deque[torch.Tensor] = deque(maxlen=block_loop.keep_frames(cfg))
        # Joint audio-video: the audio cache, the prompt's sink K / V, decoder and resampler states.
        self.audio_cache = new_audio_cache(cfg, dtype=pipe.dtype, device=pipe.device) if cfg.audio else None
        self.sink_kv = pipe.model.sink_kv(self.text_kv) if cfg.audio else None
        self.audio_decoder_state = pipe.audio_decoder.init_state() if cfg.audio else None
        self.resampler_state = pipe.resampler.init_state() if cfg.audio else None
        self.audio_samples_out = 0  # at pipe.sample_rate
        # Actions: held keys and pending events (world models only).
        # ``action_clock``: "client" for wire events (any client clock), "stream" for media-clock scripts.
        self.action_state = ActionState(pipe.action_spec, clock=action_clock) if pipe.action_spec is not None else None
        # Audio latents and action windows of the kept blocks (start frame -> (audio, actions)), for re-caching.
        self.block_extras: dict[int, tuple[torch.Tensor | None, ActionInput | None]] = {}
        # Speech in (avatars): features by stream frame; speech starts at the first generated block.
        self.speech = SpeechInput(cfg) if cfg.audio_in is not None else None
        self.closed = False

    # ----- public API -------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self, actions: Any = None, audio: Any = None) -> Chunk:
        """Generate, cache and decode one block.

        ``actions``: the wire events received since the previous block (see ``streamgen.actions``), or
        None; ignored by models without actions. ``audio``: avatars' speech received since the previous
        block (mono PCM at ``config.audio_in.sample_rate``; ``audio_features.SpeechInput``: sample 0 starts
        the first generated frame, audio a block needs and lacks is silence); ignored by other models.
        """
        t0 = time.perf_counter()
        return self.run_block(self.begin_block(actions, audio), t0)

    @torch.inference_mode()
    def begin_block(self, actions: Any = None, audio: Any = None) -> ActionInput | None:
        """The per-session work before a block's forwards (``step`` and ``streamgen.batch_step``): this
        block's action windows from the wire events (None: no action model), the speech received (avatars),
        and in ``recompute`` mode the cache rebuilt under the current prompt."""
        if self.closed:
            raise RuntimeError("step() on a closed session")
        acts = self.block_actions(actions)
        if self.speech is not None:
            self.speech.start(self.next_frame)
            if audio is not None:
                self.speech.push(audio)
        if self.config.prompt_switch == "recompute" and self.next_frame > 0:
            self._rebuild_cache(self.config.recompute_frames)
        return acts

    @torch.inference_mode()
    def run_block(self, acts: ActionInput | None, t0: float) -> Chunk:
        """The block begun by ``begin_block`` (``acts``: its action windows), generated alone through the
        block loop, decoded beside the refill (``streamgen.block_decode``); ``t0``: when the block began
        (``timings["total"]``)."""
        timings: dict[str, float] = {}
        decoded: list[Decoded] = []

        def around_refill(x0: block_loop.Streams, refill: Callable[[], None]) -> None:
            decoded.extend(beside_refill(self.pipe, lambda: decode_sessions([self], x0), refill))
        out = block_loop.run_block(self._block_forward(self.next_frame, acts), self.block_noise, self.pipe.timesteps,
                                   context_noise=self.config.context_noise, timings=timings, around_refill=around_refill)
        return self.finish_block(out, acts, timings, t0, decoded=decoded[0])

    @torch.inference_mode()
    def finish_block(self, out: block_loop.Streams, acts: ActionInput | None, timings: dict[str, float], t0: float, *,
                     decoded: Decoded | None = None) -> Chunk:
        """Keep the block's clean latents ``out`` (one ``[1, ...]`` tensor per stream) for re-caching, decode
        and emit it (``decoded``: already decoded, ``streamgen.block_decode``), with the block loop's
        ``timings`` and the total since ``t0``."""
        x0, a0 = out["video"], out.get("audio")
        self.remember(x0, a0, acts)
        cfg = self.config
        if self.speech is not None:  # keep the windows of the frames a re-cache may replay
            keep = block_loop.keep_frames(cfg) + cfg.audio_in.radius
            self.speech.prune(range(cfg.sink_frames + cfg.audio_in.radius), self.next_frame - keep)
        chunk = self.emit(x0, a0, decoded=decoded)
        chunk.timings = {**timings, **chunk.timings}
        chunk.timings["total"] = time.perf_counter() - t0
        return chunk

    @torch.inference_mode()
    def prime(self, video: Any, audio: Any = None, actions: Any = None) -> None:
        """Start the stream from real media (``streamgen.session_prime.prime``, which says how): ``video``
        uint8 ``[T, H, W, 3]``, T a whole number of blocks; ``audio`` float32 ``[S, C]`` at the decoder's
        native rate (None = silence); ``actions`` None, one list of wire events per block, or key rows."""
        prime(self, video, audio, actions)

    @torch.inference_mode()
    def emit(self, x0: torch.Tensor, audio_x0: torch.Tensor | None = None, *, decoded: Decoded | None = None) -> Chunk:
        """Decode one block of clean latents into a chunk and advance the stream counters (``step`` calls
        this after denoising; tests replay latents through it to check the audio / video bookkeeping).
        ``decoded``: the block already decoded (by ``step`` beside the refill)."""
        if decoded is None:
            decoded = decode_sessions([self], {"video": x0, "audio": audio_x0})[0]
        video = frames_to_uint8(decoded.frames[0])
        wave = sample_index = None
        if decoded.wave is not None:
            wave = decoded.wave.float().cpu().numpy()  # [S, C]
            sample_index = self.audio_samples_out
            self.audio_samples_out += wave.shape[0]
        chunk = Chunk(
            video=video,
            audio=wave,
            sample_rate=self.pipe.sample_rate if wave is not None else None,
            block_index=self.block_index,
            frame_index=self.video_frames_out,
            timings=dict(decoded.timings),
            sample_index=sample_index,
        )
        self.block_index += 1
        self.next_frame += self.config.frames_per_block
        self.video_frames_out += video.shape[0]
        return chunk

    @torch.inference_mode()
    def set_prompt(self, prompt: str | None) -> None:
        """Switch the prompt; the next block is generated under it.

        ``recache`` (LongLive): the cache is rebuilt once from the kept clean latents under the new
        prompt. ``recompute`` (Krea): the cache is rebuilt before every block anyway.
        """
        self.prompt = prompt
        if self.conditioning is not None and self.conditioning.context_kv is not None:
            return  # the start image is the whole context: a prompt changes nothing
        self._condition_on(self.pipe.encode_prompt(prompt))

    @torch.inference_mode()
    def set_text(self, text: torch.Tensor) -> None:
        """Condition on text embeddings ``[1, L, text_dim]`` encoded elsewhere (a training set's), like
        a prompt switch."""
        self.prompt = None
        self._condition_on(self.pipe.model.encode_text(text.to(self.pipe.device, self.pipe.dtype)))

    @torch.inference_mode()
    def set_reference(self, image: Any) -> None:
        """Pin an avatar's identity (``streamgen.identity``): ``image`` uint8 ``[H, W, 3]`` over the sink frames.
        Before the first block it is primed as the sink block; mid-stream only the sink slots are re-cached
        (as a stream primed with ``image`` holds them); ring, position and decoder state stay."""
        frames = reference_frames(self.config, image)
        if self.next_frame == 0:
            return self.prime(frames)
        cfg, n = self.config, self.config.frames_per_block
        x = self.pipe.decoder.encode(frames).to(self.pipe.device, self.pipe.dtype)  # [1, sink, C, h, w]
        scratch = RollingKVCache(cfg, dtype=self.pipe.dtype, device=self.pipe.device)
        for j in range(0, cfg.sink_frames, n):
            forward = self._block_forward(j, self.block_extras.get(j, (None, None))[1], cache=scratch)
            block_loop.refill(forward, {"video": x[:, j : j + n]}, self.block_noise, cfg.context_noise)
        copy_sink_slots(scratch, self.cache)
        self.sink_latents = list(x.split(1, dim=1))

    def _condition_on(self, text_kv: list) -> None:
        self.text_kv = text_kv
        if self.config.audio is not None:
            self.sink_kv = self.pipe.model.sink_kv(self.text_kv)
        if self.config.prompt_switch == "recache" and self.next_frame > 0:
            self._rebuild_cache(len(self.recent_latents))

    def close(self) -> None:
        """Free the cache buffers; the session cannot step afterwards."""
        self.closed = True
        self.cache = None
        self.audio_cache = None
        self.conditioning = None
        self.text_kv = None
        self.sink_kv = None
        self.block_extras.clear()
        self.sink_latents.clear()
        self.recent_latents.clear()

    # ----- internals --------------------------------------------------------------------------
    def _noise(self, like_shape) -> torch.Tensor:
        return self.noise_source(self.block_index, tuple(like_shape), self.pipe.device, self.pipe.dtype)

    def _timesteps(self, value: float, frames: int) -> torch.Tensor:
        return torch.full((1, frames), value, device=self.pipe.device, dtype=torch.float32)

    def block_actions(self, events) -> ActionInput | None:
        """This block's action windows as tensors ``[1, n, R, K]`` / ``[1, n, R, M]`` (None: no action model)."""
        if self.action_state is None:
            return None
        w = self.action_state.block(events, self.config.frames_per_block)
        dev, dt = self.pipe.device, self.pipe.dtype
        return ActionInput(torch.from_numpy(w.keyboard)[None].to(dev, dt), torch.from_numpy(w.mouse)[None].to(dev, dt))

    def _forward(self, x, t: float, start: int, audio=None, acts: ActionInput | None = None, cache=None):
        """The model on one block at timestep ``t`` (both modalities for joint models), over ``cache``
        (default: the session's)."""
        kw: dict[str, Any] = {"actions": acts}
        if audio is not None:
            kw.update(audio=audio, audio_t=self._timesteps(t, audio.shape[1]), audio_cache=self.audio_cache, sink_kv=self.sink_kv)
        if self.conditioning is not None:
            kw.update(self.conditioning.forward_kwargs(start, x.shape[1]))
        if self.speech is not None:
            kw["audio_in"] = self.speech.windows(start, x.shape[1]).to(self.pipe.device, self.pipe.dtype)  # [1, n, R, D]
        return self.pipe.model.forward_cached(x, self._timesteps(t, x.shape[1]), self.text_kv, cache or self.cache, start, **kw)

    def _block_forward(self, start: int, acts: ActionInput | None, cache=None) -> block_loop.Forward:
        """The model over this session's caches (or video ``cache``) at frame ``start``, as the block loop calls it."""
        def forward(xs: block_loop.Streams, t: float) -> block_loop.Streams:
            out = self._forward(xs["video"], t, start, xs.get("audio"), acts, cache)
            return {"video": out[0], "audio": out[1]} if "audio" in xs else {"video": out}
        return forward

    def block_noise(self) -> block_loop.Streams:
        """One fresh draw per stream from the session's generator, video first."""
        cfg = self.config
        draw = {"video": self._noise((1, cfg.frames_per_block, cfg.in_channels, cfg.latent_height, cfg.latent_width))}
        if cfg.audio is not None:
            draw["audio"] = self._noise((1, cfg.audio_frames_per_block, cfg.audio.channels))
        return draw

    def refill_clean(self, x0: torch.Tensor, a0: torch.Tensor | None = None, acts: ActionInput | None = None) -> None:
        """Overwrite the block's K / V with those of its clean latents at ``context_noise`` (priming)."""
        clean = {"video": x0} if a0 is None else {"video": x0, "audio": a0}
        block_loop.refill(self._block_forward(self.next_frame, acts), clean, self.block_noise, self.config.context_noise)

    def remember(self, x0: torch.Tensor, a0: torch.Tensor | None = None, acts: ActionInput | None = None) -> None:
        for i in range(x0.shape[1]):
            frame = x0[:, i : i + 1]
            if self.next_frame + i < self.config.sink_frames:
                self.sink_latents.append(frame)
            else:
                self.recent_latents.append(frame)
        if a0 is None and acts is None:
            return
        self.block_extras[self.next_frame] = (a0, acts)
        oldest = self.next_frame + x0.shape[1] - self.recent_latents.maxlen  # first frame still kept
        for start in [s for s in self.block_extras if self.config.sink_frames <= s < oldest]:
            del self.block_extras[start]

    def _rebuild_cache(self, recent: int) -> None:
        """Recompute the cache from the sink latents and the last ``recent`` clean frames, block by block,
        under the current prompt, at their original positions (positions and slots as in generation)."""
        cfg = self.config
        n = cfg.frames_per_block
        recent -= recent % n
        self.cache.reset()
        if self.audio_cache is not None:
            self.audio_cache.reset()
        if self.conditioning is not None:
            self.conditioning.reset()
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
                audio, acts = self.block_extras.get(start + j, (None, None))
                self._forward(block, cfg.context_noise, start + j, audio, acts)
