"""Matrix-Game 2.0's action module, with its parameter names, for its released checkpoints.

Selected by ``ActionConfig.module = "matrix-game-2"`` (``streamgen/models/action_modules.py`` stays the
module of streamgen's own worlds). Per latent frame ``f`` it receives the window of raw action rows that
frame covers (``streamgen.actions``): keyboard ``[B, F, R, K]``, mouse ``[B, F, R, M]``, ``R = 12``.

- **mouse**: at every token location, the frame's token (not normalised) concatenated with the flattened
  mouse window goes through ``mouse_mlp`` (Linear, GELU-tanh, Linear, LayerNorm) and ``t_qkv``; q and k
  are RMS-normalised per head and rotated by their absolute frame index; each location then attends over
  its own last ``window_frames`` frames (a temporal self-attention), and ``proj_mouse`` adds the result.
- **keyboard**: the window's rows are embedded (``keyboard_embed``), flattened per frame and projected to
  one keyboard key / value per frame (``keyboard_attn_kv``); every token queries (``mouse_attn_q``) the
  keyboard keys of the last ``window_frames`` frames, q and k rotated by frame index; ``proj_keyboard`` adds.

Streaming, each of the two attentions reads a per-session cache of one token per frame (the mouse one
per token location), kept exactly like the video's rolling KV cache: :class:`Mg2ActionCaches` is owned by
the session (``streamgen.image_condition.StreamConditioning``) and handed in each block. Without caches
(a full-sequence forward) both attend over all the given frames (Matrix-Game's bidirectional foundation
model). As released, the per-head RMSNorms store a weight that their forward does not apply; so here.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from streamgen.config import ModelConfig
from streamgen.models.action_modules import ActionInput
from streamgen.models.attention import DEFAULT_BACKEND, AttentionBackend
from streamgen.models.init import zero_linear_
from streamgen.models.kv_cache import CacheWrite, RollingKVCache
from streamgen.models.norms import rms_norm
from streamgen.models.rope import apply_rope

NORM_EPS = 1e-6  # Matrix-Game's WanRMSNorm(head_dim, eps=1e-6) in the action module


class HeadNorm(nn.Module):
    """RMSNorm over the head dim whose stored weight is not applied (Matrix-Game 2.0's released forward)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, None, NORM_EPS)


def action_layers(config: ModelConfig) -> int:
    """How many leading DiT layers carry an action module."""
    if config.actions is None:
        return 0
    return config.actions.num_layers or (config.num_layers + 1) // 2


class Mg2ActionCaches:
    """One session's mouse and keyboard caches: per action layer, one token per frame (the mouse cache one
    per token location, ``batch * tokens_per_frame`` rows), the video cache's window and sink."""

    def __init__(self, config: ModelConfig, *, batch: int = 1, dtype=torch.float32, device="cpu") -> None:
        a = config.actions
        layers = action_layers(config)

        def view(width: int) -> ModelConfig:  # one token per frame, the action attention's heads
            return config.with_(latent_height=config.patch[1], latent_width=config.patch[2], dim=width, num_heads=a.heads,
                                rope_mode="absolute", actions=None, audio=None, image_conditioning=None)

        self.mouse = (RollingKVCache(view(a.mouse_hidden_dim), batch=batch * config.tokens_per_frame, dtype=dtype,
                                     device=device, num_layers=layers) if a.mouse_axes else None)
        self.keyboard = (RollingKVCache(view(a.keyboard_hidden_dim), batch=batch, dtype=dtype, device=device,
                                        num_layers=layers) if a.keys else None)

    def reset(self) -> None:
        for cache in (self.mouse, self.keyboard):
            if cache is not None:
                cache.reset()

    def step(self, windows: ActionInput, start_frame: int, frames: int) -> "Mg2ActionStep":
        """What every action layer of one forward of the block at ``start_frame`` reads and writes."""
        return Mg2ActionStep(windows, start_frame, self,
                             self.mouse.plan(start_frame, frames) if self.mouse is not None else None,
                             self.keyboard.plan(start_frame, frames) if self.keyboard is not None else None)


@dataclass
class Mg2ActionStep:
    """One forward's action input: the windows, the block's first frame, and the caches with their plans
    (``caches`` None: attend over the given frames only)."""

    windows: ActionInput
    start_frame: int = 0
    caches: Mg2ActionCaches | None = None
    mouse_plan: CacheWrite | None = None
    keyboard_plan: CacheWrite | None = None


class Mg2ActionModule(nn.Module):
    def __init__(self, config: ModelConfig, index: int) -> None:
        super().__init__()
        a = config.actions
        dim = config.dim
        self.index = index  # which action layer: its row in the session's caches
        self.heads = a.heads
        self.time_dims, self.theta = a.rope_dims[0], a.rope_theta
        self.window_rows = a.window_frames * config.temporal_upsample
        self.num_keys, self.num_axes = len(a.keys), len(a.mouse_axes)
        bias = a.qkv_bias
        if self.num_keys:
            self.keyboard_embed = nn.Sequential(nn.Linear(self.num_keys, a.hidden_size), nn.SiLU(),
                                                nn.Linear(a.hidden_size, a.hidden_size))
            kdim = a.keyboard_hidden_dim
            self.key_attn_q_norm, self.key_attn_k_norm = HeadNorm(kdim // a.heads), HeadNorm(kdim // a.heads)
            self.mouse_attn_q = nn.Linear(dim, kdim, bias=bias)
            self.keyboard_attn_kv = nn.Linear(a.hidden_size * self.window_rows, 2 * kdim, bias=bias)
            self.proj_keyboard = nn.Linear(kdim, dim, bias=bias)
        if self.num_axes:
            mdim = a.mouse_hidden_dim
            self.mouse_mlp = nn.Sequential(nn.Linear(self.num_axes * self.window_rows + dim, mdim), nn.GELU(approximate="tanh"),
                                           nn.Linear(mdim, mdim), nn.LayerNorm(mdim))
            self.t_qkv = nn.Linear(mdim, 3 * mdim, bias=bias)
            self.img_attn_q_norm, self.img_attn_k_norm = HeadNorm(mdim // a.heads), HeadNorm(mdim // a.heads)
            self.proj_mouse = nn.Linear(mdim, dim, bias=bias)
        self.backend: AttentionBackend = DEFAULT_BACKEND  # replaced by CausalDiT.set_attention_backend
        self.zero_outputs()

    def zero_outputs(self) -> None:
        """Zero the output projections (Matrix-Game's init): the module then adds exactly zero."""
        for name in ("proj_mouse", "proj_keyboard"):
            zero_linear_(getattr(self, name, None))

    def _rope(self, start: int, frames: int, head_dim: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin ``[frames, head_dim / 2]`` at absolute frames ``start ..``: the first ``time_dims`` of
        the head rotate with base ``theta``; the rest (height and width, both at 0) do not."""
        pos = torch.arange(start, start + frames, device=device, dtype=torch.float64)
        freqs = self.theta ** (-torch.arange(0, self.time_dims, 2, device=device, dtype=torch.float64) / self.time_dims)
        angles = torch.zeros(frames, head_dim // 2, device=device, dtype=torch.float64)
        angles[:, : self.time_dims // 2] = pos[:, None] * freqs  # [F, time_dims / 2]
        return angles.cos().float(), angles.sin().float()

    def _attend(self, q, k, v, cache: RollingKVCache | None, plan: CacheWrite | None) -> torch.Tensor:
        """q ``[N, Lq, H, D]`` over k, v ``[N, F, H, D]`` (rotated), through the cache when streaming."""
        if cache is not None:
            cache.write(self.index, plan, k, v)
            k, v = cache.read(self.index, plan)
        return self.backend(q, k, v)

    def forward(self, x: torch.Tensor, step: Mg2ActionStep) -> torch.Tensor:
        """x ``[B, F, T, C]`` -> ``[B, F, T, C]``."""
        b, f, t, c = x.shape
        win = step.windows
        if win.keyboard.shape[1] != f or win.keyboard.shape[2] != self.window_rows:
            raise ValueError(f"action windows {tuple(win.keyboard.shape)} do not match {f} frames x {self.window_rows} rows")
        caches = step.caches
        if self.num_axes:
            mdim = self.t_qkv.in_features
            hd = mdim // self.heads
            cos, sin = self._rope(step.start_frame, f, hd, x.device)
            h = x.permute(0, 2, 1, 3).reshape(b * t, f, c)  # [B*T, F, C]: each location's frames
            mouse = win.mouse.to(x.dtype).flatten(2)  # [B, F, R*M]
            mouse = mouse[:, None].expand(b, t, f, mouse.shape[-1]).reshape(b * t, f, -1)  # [B*T, F, R*M]
            g = self.mouse_mlp(torch.cat([h, mouse], dim=-1))  # [B*T, F, Cm]
            q, k, v = self.t_qkv(g).view(b * t, f, 3, self.heads, hd).unbind(2)  # 3 x [B*T, F, H, D]
            q = apply_rope(self.img_attn_q_norm(q), cos, sin)
            k = apply_rope(self.img_attn_k_norm(k), cos, sin)
            out = self._attend(q, k, v, caches.mouse if caches else None, step.mouse_plan)  # [B*T, F, H, D]
            out = out.reshape(b, t, f, mdim).permute(0, 2, 1, 3)  # [B, F, T, Cm]
            x = x + self.proj_mouse(out)
        if self.num_keys:
            kdim = self.mouse_attn_q.out_features
            hd = kdim // self.heads
            cos, sin = self._rope(step.start_frame, f, hd, x.device)
            rows = self.keyboard_embed(win.keyboard.to(x.dtype))  # [B, F, R, hidden]
            k, v = self.keyboard_attn_kv(rows.flatten(2)).view(b, f, 2, self.heads, hd).unbind(2)  # 2 x [B, F, H, D]
            k = apply_rope(self.key_attn_k_norm(k), cos, sin)
            q = self.key_attn_q_norm(self.mouse_attn_q(x).view(b, f, t, self.heads, hd))  # [B, F, T, H, D]
            q = apply_rope(q.transpose(1, 2).reshape(b * t, f, self.heads, hd), cos, sin)  # [B*T, F, H, D]
            q = q.view(b, t, f, self.heads, hd).transpose(1, 2).reshape(b, f * t, self.heads, hd)  # [B, F*T, H, D]
            out = self._attend(q, k, v, caches.keyboard if caches else None, step.keyboard_plan)  # [B, F*T, H, D]
            x = x + self.proj_keyboard(out.reshape(b, f, t, kdim))  # [B, F, T, C]
        return x
