"""The CLIP vision tower Wan i2v and Matrix-Game 2.0 condition on, read from Wan's original file.

``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth`` holds a whole XLM-RoBERTa CLIP (``visual.*``,
``textual.*``, ``log_scale``); only ``visual.*`` is read: a ViT-H/14 (width 1280, 32 blocks of 16 heads,
224 px, 257 tokens) with a pre-norm, exact-GELU MLPs and LayerNorm eps 1e-5. The conditioning tokens are
the output of the next-to-last block (Wan's ``use_31_block``), ``[B, 257, 1280]``; ``post_norm`` and
``head`` are loaded (every ``visual.*`` key is consumed) but not applied.

The image is taken as Matrix-Game takes it: the frame in [-1, 1] resized to 224 x 224 (bicubic, the
frame's aspect squeezed), mapped back to [0, 1] and normalised with CLIP's mean and std. The widths and
depth come from the tensors; the head count from the head width of ViT-H/14 (80).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HEAD_WIDTH = 80  # ViT-H/14: 1280 wide, 16 heads
EPS = 1e-5


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.to_qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, l, c = x.shape
        q, k, v = self.to_qkv(x).view(b, l, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)  # 3 x [B, H, L, D]
        out = F.scaled_dot_product_attention(q, k, v)  # [B, H, L, D]
        return self.proj(out.transpose(1, 2).reshape(b, l, c))  # [B, L, C]


class _Block(nn.Module):
    def __init__(self, dim: int, hidden: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=EPS)
        self.attn = _Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=EPS)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ClipVision(nn.Module):
    """Wan's CLIP ViT (its parameter names, under ``visual.`` in the file)."""

    def __init__(self, *, dim: int, patch: int, tokens: int, layers: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        if dim % HEAD_WIDTH:
            raise ValueError(f"CLIP width {dim} is not a whole number of {HEAD_WIDTH}-wide heads (ViT-H/14's)")
        self.patch, self.image_size = patch, int(round((tokens - 1) ** 0.5)) * patch
        self.patch_embedding = nn.Conv2d(3, dim, kernel_size=patch, stride=patch, bias=False)
        self.cls_embedding = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.zeros(1, tokens, dim))
        self.pre_norm = nn.LayerNorm(dim, eps=EPS)
        self.transformer = nn.Sequential(*(_Block(dim, hidden, dim // HEAD_WIDTH) for _ in range(layers)))
        self.post_norm = nn.LayerNorm(dim, eps=EPS)  # loaded, not applied (the tokens come before it)
        self.head = nn.Parameter(torch.zeros(dim, out_dim))  # loaded, not applied

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised pixels ``[B, 3, S, S]`` -> the next-to-last block's tokens ``[B, 1 + (S/p)^2, C]``."""
        x = self.patch_embedding(pixels).flatten(2).transpose(1, 2)  # [B, (S/p)^2, C]
        x = torch.cat([self.cls_embedding.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1) + self.pos_embedding  # [B, T, C]
        return self.transformer[:-1](self.pre_norm(x))

    @torch.no_grad()
    def encode(self, image: np.ndarray) -> torch.Tensor:
        """uint8 ``[H, W, 3]`` -> CLIP tokens ``[1, T, C]`` (fp32)."""
        w = self.patch_embedding.weight
        unit = torch.from_numpy(np.ascontiguousarray(image)).to(w.device).permute(2, 0, 1)[None].float() / 127.5 - 1  # [1, 3, H, W]
        unit = F.interpolate(unit, size=(self.image_size,) * 2, mode="bicubic", align_corners=False)
        mean = torch.tensor(CLIP_MEAN, device=w.device)[None, :, None, None]
        std = torch.tensor(CLIP_STD, device=w.device)[None, :, None, None]
        pixels = (unit * 0.5 + 0.5 - mean) / std  # [1, 3, S, S]
        return self(pixels.to(w.dtype)).float()


def load_clip_vision(path: str | Path, device="cpu", dtype=torch.float32) -> ClipVision:
    """The vision tower of Wan's CLIP ``.pth`` (``visual.*``; the text tower is not read)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CLIP file {path} does not exist")
    sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    visual = {k.removeprefix("visual."): v for k, v in sd.items() if k.startswith("visual.")}
    if "patch_embedding.weight" not in visual:
        raise KeyError(f"{path}: no visual.patch_embedding.weight; expected Wan's CLIP (visual.* and textual.* keys), "
                       f"found {sorted(sd)[:6]}")
    dim, _, patch, _ = visual["patch_embedding.weight"].shape  # [C, 3, p, p]
    layers = len({k.split(".")[1] for k in visual if k.startswith("transformer.")})
    model = ClipVision(dim=dim, patch=patch, tokens=visual["pos_embedding"].shape[1], layers=layers,
                       hidden=visual["transformer.0.mlp.0.weight"].shape[0], out_dim=visual["head"].shape[1])
    model.load_state_dict(visual, strict=True)
    return model.to(device=device, dtype=dtype).eval()
