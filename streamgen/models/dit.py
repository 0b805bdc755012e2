"""``CausalDiT``: the Wan2.1 diffusion transformer, usable bidirectionally (teacher), with a
block-causal mask (training) or block by block over a rolling KV cache (streaming student).

Parameter names follow the original Wan2.1 layout so its checkpoints load with few renames.
Latents are ``[B, F, C, H, W]`` (frame-major, the natural order for streaming); timesteps ``[B, F]``.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from streamgen.config import ModelConfig
from streamgen.models.action_modules import ActionInput, ActionModule
from streamgen.models.audio_in import AudioInModule
from streamgen.models.audio_video import AudioStream, joint_forward, joint_forward_cached, sink_kv
from streamgen.models.attention import AttentionBackend, resolve_backend
from streamgen.models.av_rope import AudioRope
from streamgen.models.init import small_normal_
from streamgen.models.kv_cache import RollingKVCache
from streamgen.models.layers import AttnContext, DiTBlock
from streamgen.models.mg2_action import Mg2ActionCaches, Mg2ActionModule, Mg2ActionStep, action_layers
from streamgen.models.norms import layer_norm_modulate
from streamgen.models.rope import RopeTable

TextKV = list[tuple[torch.Tensor, torch.Tensor]]


def sinusoidal_embedding(dim: int, t: torch.Tensor) -> torch.Tensor:
    """Wan's timestep embedding ``[..., dim]`` = [cos | sin], computed in float64 (fractional t allowed)."""
    half = dim // 2
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=t.device) / half)
    angles = t.to(torch.float64)[..., None] * freqs
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1).float()


class Head(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.eps = config.eps
        self.head = nn.Linear(config.dim, config.out_channels * math.prod(config.patch))
        self.modulation = nn.Parameter(torch.randn(1, 2, config.dim) / config.dim**0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """x ``[B, F, T, C]``, e ``[B, F, C]`` (time embedding before projection)."""
        mod = (self.modulation.float()[:, None] + e.float()[:, :, None]).unbind(dim=2)  # 2 x [B, F, C]
        return self.head(layer_norm_modulate(x, mod[0], mod[1], self.eps))


class ImageProjection(nn.Module):
    """Wan i2v's ``img_emb``: LayerNorm, Linear, GELU, Linear, LayerNorm from CLIP tokens to the width."""

    def __init__(self, clip_dim: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(clip_dim), nn.Linear(clip_dim, clip_dim), nn.GELU(),
                                  nn.Linear(clip_dim, dim), nn.LayerNorm(dim))

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.proj(clip)


def speech_kw(audio_in: torch.Tensor | None) -> dict:
    """``run_blocks``' speech keyword, only when there is speech: a model without it calls ``run_blocks``
    exactly as before the plug-in (a run_blocks shadowed on an instance keeps working)."""
    return {} if audio_in is None else {"audio_in": audio_in}


class CausalDiT(nn.Module):
    """The model. ``attention_backend`` (``attention.BACKENDS``) is resolved here, once, and handed to
    every layer; reassigning ``model.attention_backend`` resolves and hands out the new one."""

    def __init__(self, config: ModelConfig, *, attention_backend: str = "sdpa") -> None:
        super().__init__()
        self.config = config
        c = config
        # The noisy latent, then (image-conditioned models) the first-frame mask and the start image's latent.
        self.patch_embedding = nn.Conv3d(c.in_channels + c.cond_channels, c.dim, kernel_size=c.patch, stride=c.patch)
        ic = c.image_conditioning
        if ic is None:
            self.text_embedding = nn.Sequential(nn.Linear(c.text_dim, c.dim), nn.GELU(approximate="tanh"), nn.Linear(c.dim, c.dim))
        else:  # Wan i2v's MLPProj of the CLIP tokens; Matrix-Game 2.0 has no text, so no text_embedding
            self.img_emb = ImageProjection(ic.clip_dim, c.dim)
        self.time_embedding = nn.Sequential(nn.Linear(c.freq_dim, c.dim), nn.SiLU(), nn.Linear(c.dim, c.dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(c.dim, 6 * c.dim))
        acting = action_layers(c)
        speech_layers = 0 if c.audio_in is None else (c.audio_in.num_layers or c.num_layers)
        self.blocks = nn.ModuleList(DiTBlock(c, with_actions=i < acting, action_index=i, with_audio_in=i < speech_layers)
                                    for i in range(c.num_layers))
        self.head = Head(c)
        self.audio = AudioStream(c) if c.audio is not None else None
        self._rope: RopeTable | None = None
        self._audio_rope: AudioRope | None = None
        self.backend: AttentionBackend = resolve_backend(attention_backend)
        self.set_attention_backend(attention_backend)
        self.init_weights()

    @property
    def attention_backend(self) -> str:
        return self.backend.name

    @attention_backend.setter
    def attention_backend(self, name: str) -> None:
        self.set_attention_backend(name)

    def set_attention_backend(self, name: str) -> None:
        """Resolve backend ``name`` once and give it to the model and every layer that attends or modulates."""
        backend = resolve_backend(name)
        for module in self.modules():
            if isinstance(getattr(module, "backend", None), AttentionBackend):
                module.backend = backend

    def init_weights(self) -> None:
        """Wan's init: xavier linears, zero output head (a fresh model predicts zero velocity)."""
        if next(self.parameters()).device.type == "meta":
            return
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:  # Matrix-Game's action projections have none
                    nn.init.zeros_(m.bias)
        nn.init.xavier_uniform_(self.patch_embedding.weight.flatten(1))
        nn.init.zeros_(self.head.head.weight)
        nn.init.zeros_(self.head.head.bias)
        for m in self.modules():
            if isinstance(m, (ActionModule, Mg2ActionModule, AudioInModule)):
                m.zero_outputs()  # a new action / speech module leaves a pretrained video model unchanged
        if self.audio is not None:
            nn.init.zeros_(self.audio.head.weight)
            nn.init.zeros_(self.audio.head.bias)

    def wake_outputs(self, *, actions: bool) -> None:
        """Small random weights (``init.INIT_STD``) for the zero-initialised output heads, and with
        ``actions`` for the action and speech modules' outputs: a randomly initialised model whose output then
        depends on its input, its keys and its speech (random presets, smoke runs of distillation recipes)."""
        small_normal_(self.head.head.weight)
        if self.audio is not None:
            small_normal_(self.audio.head.weight)
        if actions:
            for blk in self.blocks:
                for proj in ("proj_mouse", "proj_keyboard"):
                    if blk.action is not None and hasattr(blk.action, proj):
                        small_normal_(getattr(blk.action, proj).weight)
                if blk.audio_in is not None:
                    small_normal_(blk.audio_in.proj.weight)

    # ----- helpers ------------------------------------------------------------------------
    @property
    def rope(self) -> RopeTable:
        device = self.patch_embedding.weight.device
        if self._rope is None or self._rope.device != device:
            self._rope = RopeTable(self.config, device)
        return self._rope

    @property
    def audio_rope(self) -> AudioRope:
        device = self.patch_embedding.weight.device
        if self._audio_rope is None or self._audio_rope.device != device:
            self._audio_rope = AudioRope(self.config, device)
        return self._audio_rope

    def encode_text(self, text: torch.Tensor) -> TextKV:
        """Per-layer cross-attention K / V of encoder tokens ``[B, Ltext, text_dim]`` (cache per prompt).

        Joint audio-video models return ``2 * num_layers`` entries: the video blocks', then the audio blocks'.
        """
        if self.config.image_conditioning is not None:
            raise ValueError(f"model {self.config.name!r} has no text input: its cross-attention context is the start "
                             "image (encode_image)")
        ctx = self.text_embedding(text)  # [B, Ltext, C]
        kv = [blk.cross_attn.context_kv(ctx) for blk in self.blocks]
        if self.audio is not None:
            kv += [blk.cross_attn.context_kv(ctx) for blk in self.audio.blocks]
        return kv

    def encode_image(self, clip: torch.Tensor) -> TextKV:
        """Per-layer cross-attention K / V of CLIP image tokens ``[B, clip_tokens, clip_dim]`` (image-conditioned
        models: the whole context, in place of text; computed once per session)."""
        if self.config.image_conditioning is None:
            raise ValueError(f"model {self.config.name!r} is not image-conditioned (config.image_conditioning is None)")
        ctx = self.img_emb(clip)  # [B, Lclip, C]
        return [blk.cross_attn.context_kv(ctx) for blk in self.blocks]

    def sink_kv(self, text_kv: TextKV, batch: int = 1) -> TextKV:
        """Per-layer K / V of the audio sink tokens under a prompt (computed once per prompt and session)."""
        return sink_kv(self, text_kv, batch)

    def embed_video(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Latents ``[B, F, C, H, W]`` (and the image condition ``[B, F, Cc, H, W]``) -> patch tokens ``[B, F, T, C]``."""
        if (cond is None) != (self.config.cond_channels == 0):
            raise ValueError(f"model {self.config.name!r} takes {self.config.cond_channels} condition channels but cond="
                             f"{None if cond is None else tuple(cond.shape)} was given")
        if cond is not None:
            x = torch.cat([x, cond.to(x.dtype).expand(x.shape[0], *cond.shape[1:])], dim=2)  # [B, F, C + Cc, H, W]
        tokens = self.patch_embedding(x.transpose(1, 2))  # [B, C, F, gh, gw]
        return tokens.flatten(3).permute(0, 2, 3, 1)  # [B, F, T, C]

    def embed_time(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Timesteps ``[B, F]`` -> (embedding ``[B, F, C]`` for the head, block modulation ``[B, F, 6, C]``)."""
        # fp32 when the pipeline keeps the time embedding fp32 in a bf16 model (as Wan does)
        e = self.time_embedding(sinusoidal_embedding(self.config.freq_dim, t).to(self.time_embedding[0].weight.dtype))  # [B, F, C]
        e0 = self.time_projection(e).unflatten(-1, (6, self.config.dim))  # [B, F, 6, C]
        return e, e0

    def unpatchify(self, out: torch.Tensor) -> torch.Tensor:
        """Head output ``[B, F, T, pt*ph*pw*Co]`` -> latents ``[B, F, Co, H, W]``."""
        c = self.config
        b, f = out.shape[:2]
        pt, ph, pw = c.patch
        out = out.view(b, f, c.grid_height, c.grid_width, pt, ph, pw, c.out_channels)  # [B, F, gh, gw, pt, ph, pw, Co]
        out = out.permute(0, 1, 4, 7, 2, 5, 3, 6)  # [B, F, pt, Co, gh, ph, gw, pw]
        return out.reshape(b, f * pt, c.out_channels, c.latent_height, c.latent_width)  # [B, F, Co, H, W]

    def layer_stack(self, layer: Callable[[int, Any], Any], h):
        """Every transformer layer in order, ``h = layer(i, h)``; h is the video tokens, or (video, audio)
        of joint models. The one seam through which a speed setting changes the stack from outside the
        model code (``streamgen.feature_cache`` shadows it on a model instance)."""
        for i in range(self.config.num_layers):
            h = layer(i, h)
        return h

    def run_blocks(self, x, t, text_kv: TextKV, ctx: AttnContext, actions=None, cond=None,
                   audio_in: torch.Tensor | None = None) -> torch.Tensor:
        """The block loop of the video-only model: embed, every block under ``ctx``, head, unpatchify."""
        h = self.embed_video(x, cond)
        e, e0 = self.embed_time(t)
        h = self.layer_stack(lambda i, h: self.blocks[i](h, e0, text_kv[i], ctx, i, actions, audio_in), h)
        return self.unpatchify(self.head(h, e))

    def _check_audio(self, audio) -> None:
        if (audio is None) != (self.audio is None):
            raise ValueError(
                f"model {self.config.name!r} {'has' if self.audio is not None else 'has no'} audio stream but "
                f"audio={'None' if audio is None else tuple(audio.shape)} was given"
            )

    # ----- forwards -------------------------------------------------------------------------
    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        text_kv: TextKV,
        *,
        positions: tuple[int, ...] | None = None,
        mask: torch.Tensor | None = None,
        actions: ActionInput | None = None,
        audio: torch.Tensor | None = None,
        audio_t: torch.Tensor | None = None,
        audio_positions: tuple[int, ...] | None = None,
        cond: torch.Tensor | None = None,
        audio_in: torch.Tensor | None = None,
    ):
        """Full-sequence forward: bidirectional (``mask=None``) or masked (token mask ``[L, L]``).

        x ``[B, F, C, H, W]``, t ``[B, F]`` -> velocity ``[B, F, C, H, W]``. ``positions``: RoPE time
        position of each frame (default ``0 .. F-1``; teacher forcing repeats them for both halves).
        ``actions``: per-frame action windows (None: action modules are skipped).
        Joint audio-video models also take ``audio [B, Fa, Ca]``, ``audio_t [B, Fa]`` and the audio frame
        index of each audio frame (``audio_positions``), need the joint mask of ``av_masks`` and return
        ``(video velocity, audio velocity)``. Avatars take ``audio_in [B, F, R, D]``, each frame's speech
        window (``streamgen.audio_features``; None: the speech modules are skipped).
        """
        self._check_audio(audio)
        f = x.shape[1]
        positions = tuple(range(f)) if positions is None else tuple(positions)
        if len(positions) != f:
            raise ValueError(f"positions has {len(positions)} entries for {f} frames")
        if audio is not None:
            fa = audio.shape[1]
            audio_positions = tuple(range(fa)) if audio_positions is None else tuple(audio_positions)
            if len(audio_positions) != fa:
                raise ValueError(f"audio_positions has {len(audio_positions)} entries for {fa} audio frames")
            return joint_forward(self, x, t, audio, audio_t, text_kv, positions=positions,
                                 audio_positions=audio_positions, mask=mask, actions=actions)
        rope = self.rope.for_positions(positions)
        ctx = AttnContext(rope=rope, mask=mask)
        if self._mg2_actions and actions is not None:
            if mask is not None or positions != tuple(range(positions[0], positions[0] + f)):
                raise ValueError("Matrix-Game 2.0's action module runs bidirectionally over consecutive frames or "
                                 "streaming (forward_cached); a masked forward is not built")
            actions = Mg2ActionStep(actions, positions[0])
        return self.run_blocks(x, t, text_kv, ctx, actions, cond, **speech_kw(audio_in))

    @property
    def _mg2_actions(self) -> bool:
        return self.config.actions is not None and self.config.actions.module == "matrix-game-2"

    def new_action_caches(self, batch: int = 1, dtype=torch.float32, device="cpu") -> Mg2ActionCaches | None:
        """A session's caches for Matrix-Game 2.0's action modules (None for other models)."""
        return Mg2ActionCaches(self.config, batch=batch, dtype=dtype, device=device) if self._mg2_actions else None

    def forward_cached(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        text_kv: TextKV,
        cache: RollingKVCache | Sequence[RollingKVCache],
        start_frame: int | Sequence[int],
        *,
        actions: ActionInput | None = None,
        audio: torch.Tensor | None = None,
        audio_t: torch.Tensor | None = None,
        audio_cache: RollingKVCache | Sequence[RollingKVCache] | None = None,
        sink_kv: TextKV | Sequence[TextKV] | None = None,
        cond: torch.Tensor | None = None,
        action_caches: Mg2ActionCaches | None = None,
        audio_in: torch.Tensor | None = None,
    ):
        """One streaming block: x ``[B, n, C, H, W]`` at absolute frames ``start_frame ..``; writes its K / V
        into the cache (overwriting on a re-run) and attends to everything the cache holds.

        Batched sessions (``streamgen.batch_step``): ``cache`` / ``start_frame`` (and ``audio_cache`` /
        ``sink_kv``) are sequences with one entry per row of ``x``; each row writes and reads only its own
        cache, at its own position; ``text_kv`` entries are then stacked ``[B, ...]`` (or ``[1, ...]``
        shared) or, per layer, a list of one ``(k, v)`` per row.

        Joint models: ``audio [B, na, Ca]`` of the same block (audio frames ``start_frame / n * na ..``),
        its own ``audio_cache`` (``audio_video.new_audio_cache``) and the prompt's ``sink_kv``
        (``self.sink_kv``; computed here when None). Returns ``(video, audio)`` velocities.
        Image-conditioned models: ``cond`` ``[B, n, cond_channels, H, W]`` of the block's frames; Matrix-Game
        2.0's action modules: the session's ``action_caches`` (``new_action_caches``).
        """
        self._check_audio(audio)
        n = x.shape[1]
        single = isinstance(cache, RollingKVCache)  # one cache for the whole batch (its own batch size)
        caches = [cache] if single else list(cache)
        starts = [start_frame] if single else list(start_frame)
        if not single and not len(caches) == len(starts) == x.shape[0]:
            raise ValueError(f"{len(caches)} caches and {len(starts)} start frames for a batch of {x.shape[0]}")
        if audio is not None:
            if audio_cache is None:
                raise ValueError("a joint audio-video block needs its audio_cache")
            c = self.config
            if any(s % c.frames_per_block for s in starts):
                raise ValueError(f"start_frame={start_frame} is not at a block boundary of {c.frames_per_block} frames")
            audio_caches = [audio_cache] if single else list(audio_cache)
            if single:
                sinks = [self.sink_kv(text_kv, x.shape[0]) if sink_kv is None else sink_kv]
            elif sink_kv is None or len(sink_kv) != len(caches):
                raise ValueError("batched joint blocks need one sink_kv per row")
            else:
                sinks = list(sink_kv)
            audio_starts = [s // c.frames_per_block * c.audio_frames_per_block for s in starts]
            return joint_forward_cached(self, x, t, audio, audio_t, text_kv, caches, starts, audio_caches,
                                        audio_starts, sinks, actions)
        contexts = []
        for cache_r, start_r in zip(caches, starts):
            plan = cache_r.plan(start_r, n)
            if cache_r.relative:
                rope = self.rope.for_positions(plan.query_positions)
            else:
                rope = self.rope.for_frames(start_r, n)
            key_rope = self.rope.for_positions(plan.key_positions) if cache_r.relative else None
            contexts.append(AttnContext(rope=rope, cache=cache_r, plan=plan, key_rope=key_rope))
        if self._mg2_actions and actions is not None:
            if action_caches is None or not single:
                raise ValueError("Matrix-Game 2.0's action modules stream over their own caches: pass "
                                 "action_caches=model.new_action_caches(...) (the session owns them; one session "
                                 "per forward)")
            actions = action_caches.step(actions, start_frame, n)
        return self.run_blocks(x, t, text_kv, AttnContext.per_row(contexts), actions, cond, **speech_kw(audio_in))

    def forward_teacher_forcing(
        self,
        clean: torch.Tensor,
        noisy: torch.Tensor,
        t: torch.Tensor,
        text_kv: TextKV,
        mask: torch.Tensor,
        *,
        actions: ActionInput | None = None,
        audio_clean: torch.Tensor | None = None,
        audio_noisy: torch.Tensor | None = None,
        audio_t: torch.Tensor | None = None,
        audio_in: torch.Tensor | None = None,
    ):
        """Training forward on ``[clean | noisy]`` (both ``[B, F, C, H, W]``); returns the noisy half's output.

        ``t`` ``[B, F]`` is the noisy half's timesteps; clean frames are at t = context_noise. Both halves
        get the same actions and speech windows. Joint models take the audio halves too (mask: ``av_masks`` with
        ``teacher_forcing=True``) and return ``(video, audio)`` of the noisy halves.
        """
        f = clean.shape[1]
        x = torch.cat([clean, noisy], dim=1)  # [B, 2F, C, H, W]
        t_clean = torch.full_like(t, self.config.context_noise)
        tt = torch.cat([t_clean, t], dim=1)  # [B, 2F]
        both = ActionInput.cat([actions, actions]) if actions is not None else None
        if audio_clean is None:
            speech = torch.cat([audio_in, audio_in], dim=1) if audio_in is not None else None  # [B, 2F, R, D]
            out = self.forward(x, tt, text_kv, positions=tuple(range(f)) * 2, mask=mask, actions=both, audio_in=speech)
            return out[:, f:]
        fa = audio_clean.shape[1]
        audio = torch.cat([audio_clean, audio_noisy], dim=1)  # [B, 2Fa, Ca]
        at = torch.cat([torch.full_like(audio_t, self.config.context_noise), audio_t], dim=1)  # [B, 2Fa]
        out_v, out_a = self.forward(x, tt, text_kv, positions=tuple(range(f)) * 2, mask=mask, actions=both,
                                    audio=audio, audio_t=at, audio_positions=tuple(range(fa)) * 2)
        return out_v[:, f:], out_a[:, fa:]
