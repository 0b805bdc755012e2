"""Action injection into a DiT block, after Matrix-Game 2.0's action module (GameFactory lineage).

Per latent frame ``f`` the module receives the window of raw action rows that frame covers
(:func:`streamgen.actions.latent_windows`): keyboard multi-hot ``[B, F, R, K]`` and mouse ``[B, F, R, M]``.

- mouse: the frame's flattened mouse window is concatenated to every token of the frame, passed through an
  MLP and *added* to the tokens;
- keyboard: each raw row becomes a keyboard token (embedding + window-position embedding); the tokens of
  frame ``f`` *cross-attend* to the keyboard tokens of frame ``f`` only (frame-local, so trivially causal
  and cache-free).

Both outputs go through zero-initialised projections, so a module added to a trained video model leaves
its outputs unchanged (``x + 0`` is exact) until it is trained. Simplification against Matrix-Game 2.0:
no temporal self-attention over the mouse stream and no keyboard KV cache; the window of past raw rows
(``ActionConfig.window_frames``) carries the temporal context instead.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from streamgen.config import ModelConfig
from streamgen.models.attention import DEFAULT_BACKEND, AttentionBackend
from streamgen.models.init import INIT_STD, zero_linear_
from streamgen.models.frame_local import frame_local_attention


@dataclass
class ActionInput:
    """Per-frame action windows as tensors: keyboard ``[B, F, R, K]``, mouse ``[B, F, R, M]``."""

    keyboard: torch.Tensor
    mouse: torch.Tensor

    def frames(self, start: int, count: int) -> "ActionInput":
        return ActionInput(self.keyboard[:, start : start + count], self.mouse[:, start : start + count])

    @staticmethod
    def cat(parts: list["ActionInput"]) -> "ActionInput":
        return ActionInput(torch.cat([p.keyboard for p in parts], 1), torch.cat([p.mouse for p in parts], 1))


class ActionModule(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        a = config.actions
        dim = config.dim
        self.eps = config.eps
        self.num_heads, self.head_dim = config.num_heads, config.head_dim
        self.window_rows = a.window_frames * config.temporal_upsample
        self.num_keys, self.num_axes = len(a.keys), len(a.mouse_axes)
        if self.num_axes:
            self.mouse_mlp = nn.Sequential(
                nn.Linear(dim + self.window_rows * self.num_axes, a.mouse_hidden), nn.GELU(approximate="tanh"),
                nn.Linear(a.mouse_hidden, dim),
            )
            self.proj_mouse = nn.Linear(dim, dim)
        if self.num_keys:
            self.keyboard_embed = nn.Sequential(nn.Linear(self.num_keys, dim), nn.SiLU(), nn.Linear(dim, dim))
            self.keyboard_pos = nn.Parameter(torch.randn(self.window_rows, dim) * INIT_STD)
            self.q, self.k, self.v = (nn.Linear(dim, dim) for _ in range(3))
            self.norm_q_weight = nn.Parameter(torch.ones(dim))
            self.norm_k_weight = nn.Parameter(torch.ones(dim))
            self.proj_keyboard = nn.Linear(dim, dim)
        self.backend: AttentionBackend = DEFAULT_BACKEND  # replaced by CausalDiT.set_attention_backend
        self.zero_outputs()

    def zero_outputs(self) -> None:
        """Zero the output projections: the module then adds exactly zero."""
        for name in ("proj_mouse", "proj_keyboard"):
            zero_linear_(getattr(self, name, None))

    def forward(self, x: torch.Tensor, actions: ActionInput) -> torch.Tensor:
        """x ``[B, F, T, C]`` -> ``[B, F, T, C]``."""
        b, f, t, c = x.shape
        if actions.keyboard.shape[1] != f or actions.keyboard.shape[2] != self.window_rows:
            raise ValueError(
                f"action windows {tuple(actions.keyboard.shape)} do not match {f} frames x {self.window_rows} rows"
            )
        normed = F.layer_norm(x, (c,), eps=self.eps)
        if self.num_axes:
            mouse = actions.mouse.to(x.dtype).flatten(2)  # [B, F, R*M]
            m_in = torch.cat([normed, mouse[:, :, None].expand(b, f, t, mouse.shape[-1])], dim=-1)  # [B, F, T, C+R*M]
            x = x + self.proj_mouse(self.mouse_mlp(m_in))
        if self.num_keys:
            tokens = self.keyboard_embed(actions.keyboard.to(x.dtype)) + self.keyboard_pos  # [B, F, R, C]
            out = frame_local_attention(normed, tokens, self.q, self.k, self.v, self.norm_q_weight, self.norm_k_weight,
                                        self.eps, self.num_heads, self.backend)  # [B, F, T, C]
            x = x + self.proj_keyboard(out)
        return x
