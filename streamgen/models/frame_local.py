"""Frame-local cross-attention: the tokens of latent frame ``f`` attend to a few conditioning tokens of
frame ``f`` only (keyboard rows of its action window, audio tokens of its speech window). Frame-local, so
causal by construction and cache-free; shared by ``action_modules`` and ``audio_in``."""
from __future__ import annotations

import torch
import torch.nn as nn

from streamgen.models.attention import AttentionBackend
from streamgen.models.norms import rms_norm


def frame_local_attention(normed: torch.Tensor, tokens: torch.Tensor, q: nn.Linear, k: nn.Linear, v: nn.Linear,
                          norm_q: torch.Tensor, norm_k: torch.Tensor, eps: float, num_heads: int,
                          backend: AttentionBackend) -> torch.Tensor:
    """normed ``[B, F, T, C]`` (queries), tokens ``[B, F, R, C]`` (keys / values) -> ``[B, F, T, C]``."""
    b, f, t, c = normed.shape
    r, d = tokens.shape[2], c // num_heads
    qh = rms_norm(q(normed), norm_q, eps).reshape(b * f, t, num_heads, d)  # [B*F, T, H, D]
    kh = rms_norm(k(tokens), norm_k, eps).reshape(b * f, r, num_heads, d)  # [B*F, R, H, D]
    vh = v(tokens).reshape(b * f, r, num_heads, d)  # [B*F, R, H, D]
    return backend(qh, kh, vh).reshape(b, f, t, c)  # [B*F, T, H, D] -> [B, F, T, C]
