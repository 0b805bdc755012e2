"""A tiny diffusers ``WanTransformer3DModel`` with every parameter randomised, and its outputs.

All parameters, including the ones diffusers initialises to zero or one (output projection, norms),
are drawn from a seeded normal so that a wrong mapping cannot pass by accident.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import WanTransformer3DModel

from streamgen.models.dit import CausalDiT

# Two tiny shapes: 2 heads of 12 (RoPE split 4/4/4) with freq_dim 32, and 4 heads of 16 (split 8/4/4)
# with Wan's freq_dim 256 and no cross-attention norm.
CONFIGS = {
    "h2x12": dict(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
        text_dim=16, freq_dim=32, ffn_dim=32, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
    ),
    "h4x16": dict(
        patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=16, in_channels=4, out_channels=4,
        text_dim=16, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=False, qk_norm="rms_norm_across_heads",
    ),
}
# Latent grid 4 x 6 (not square, so height / width mix-ups show), 3 frames, 5 text tokens, batch 2.
GRID = dict(latent_height=4, latent_width=6)
B, F, H, W, L_TEXT = 2, 3, 4, 6, 5


def randomise(module: torch.nn.Module, seed: int, std: float = 0.3) -> None:
    """Every parameter from a seeded normal: weight matrices ~ N(0, 1 / fan_in) (activations keep unit
    scale, so fp32 rounding stays far below the tolerance), norm weights ~ N(1, std^2), every other
    vector and the modulation tables ~ N(0, std^2)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("weight") and p.ndim >= 2:
                mean, scale = 0.0, p[0].numel() ** -0.5  # fan_in = prod(shape[1:])
            else:
                mean, scale = (1.0 if ".norm" in name and name.endswith("weight") else 0.0), std
            p.copy_(torch.randn(p.shape, generator=g) * scale + mean)


@dataclass
class Reference:
    model: WanTransformer3DModel
    x: torch.Tensor  # [B, C, F, H, W] (diffusers order)
    text: torch.Tensor  # [B, L, text_dim]
    t: torch.Tensor  # [B] integer timesteps
    t_frames: torch.Tensor  # [B, F] per-frame integer timesteps
    out: torch.Tensor  # diffusers output for (x, t)
    out_frames: torch.Tensor  # diffusers output for per-frame timesteps (given per token)


def make_reference(name: str, seed: int = 0) -> Reference:
    kwargs = CONFIGS[name]
    model = WanTransformer3DModel(**kwargs).eval()
    randomise(model, seed)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(B, kwargs["in_channels"], F, H, W, generator=g)
    text = torch.randn(B, L_TEXT, kwargs["text_dim"], generator=g)
    # Small integers: diffusers builds the sinusoid in fp32, Wan and we in fp64; equal for small t.
    t = torch.tensor([3, 7])
    t_frames = torch.tensor([[3, 7, 5], [1, 0, 9]])
    tokens = (H // 2) * (W // 2)
    with torch.no_grad():
        out = model(x, t, text, return_dict=False)[0]
        out_frames = model(x, t_frames.repeat_interleave(tokens, dim=1), text, return_dict=False)[0]
    return Reference(model, x, text, t, t_frames, out, out_frames)


def ours_forward(model: CausalDiT, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Our bidirectional forward on diffusers-ordered input ``[B, C, F, H, W]``; t ``[B]`` or ``[B, F]``."""
    model.attention_backend = "reference"
    f = x.shape[2]
    tf = t[:, None].expand(-1, f) if t.ndim == 1 else t  # [B, F]
    with torch.no_grad():
        out = model(x.transpose(1, 2), tf, model.encode_text(text))  # [B, F, C, H, W]
    return out.transpose(1, 2)  # [B, C, F, H, W]


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()
