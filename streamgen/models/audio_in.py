"""Speech conditioning of a DiT block (avatars), beside the action module.

Per latent frame ``f`` the module receives the speech window of that frame
(``streamgen.audio_features.frame_windows``): ``audio_in [B, F, R, D]``, R = ``(2 radius + 1) *
tokens_per_frame`` audio tokens of D log-mel values. Each token is embedded (MLP + a learned position in
the window), and the video tokens of frame ``f`` cross-attend to the audio tokens of frame ``f`` only:
frame-local, so it needs no audio cache and a block's output depends only on its own frames' windows.
The output projection is zero-initialised: adding the module to a trained video model leaves it bit-equal
until it is trained.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from streamgen.config import ModelConfig
from streamgen.models.attention import DEFAULT_BACKEND, AttentionBackend
from streamgen.models.frame_local import frame_local_attention
from streamgen.models.init import INIT_STD, zero_linear_


class AudioInModule(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        a = config.audio_in
        dim = config.dim
        self.eps = config.eps
        self.num_heads = config.num_heads
        self.window_tokens, self.token_dim = a.window_tokens, config.speech_token_dim
        self.embed = nn.Sequential(nn.Linear(self.token_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.pos = nn.Parameter(torch.randn(self.window_tokens, dim) * INIT_STD)
        self.q, self.k, self.v = (nn.Linear(dim, dim) for _ in range(3))
        self.norm_q_weight = nn.Parameter(torch.ones(dim))
        self.norm_k_weight = nn.Parameter(torch.ones(dim))
        self.proj = nn.Linear(dim, dim)
        self.backend: AttentionBackend = DEFAULT_BACKEND  # replaced by CausalDiT.set_attention_backend
        self.zero_outputs()

    def zero_outputs(self) -> None:
        """Zero the output projection: the module then adds exactly zero."""
        zero_linear_(self.proj)

    def forward(self, x: torch.Tensor, audio_in: torch.Tensor) -> torch.Tensor:
        """x ``[B, F, T, C]``, audio_in ``[B, F, R, D]`` -> ``[B, F, T, C]``."""
        b, f, t, c = x.shape
        if tuple(audio_in.shape[1:]) != (f, self.window_tokens, self.token_dim):
            raise ValueError(f"audio_in windows {tuple(audio_in.shape)} do not match [B, {f}, {self.window_tokens}, "
                             f"{self.token_dim}] ({f} frames x window tokens x token width)")
        normed = F.layer_norm(x, (c,), eps=self.eps)
        tokens = self.embed(audio_in.to(x.dtype)) + self.pos  # [B, F, R, C]
        out = frame_local_attention(normed, tokens, self.q, self.k, self.v, self.norm_q_weight, self.norm_k_weight,
                                    self.eps, self.num_heads, self.backend)  # [B, F, T, C]
        return x + self.proj(out)
