"""Text encoders that turn a prompt into ``[1, text_len, text_dim]`` tokens.

- :class:`HashTextEncoder`: a deterministic, weight-free encoder for the small presets and shipped
  models (each word maps to a fixed pseudo-random vector). It needs no download.
- :class:`T5TextEncoder`: umT5 (Wan) read from a local folder the user names; a clear error when it
  is missing. Nothing is ever downloaded.
"""
from __future__ import annotations

import os
import zlib

import torch


class HashTextEncoder:
    def __init__(self, text_dim: int, text_len: int) -> None:
        self.text_dim, self.text_len = text_dim, text_len

    def __call__(self, prompt: str | None) -> torch.Tensor:
        out = torch.zeros(1, self.text_len, self.text_dim)
        words = (prompt or "").lower().split()[: self.text_len]
        for i, word in enumerate(words):
            g = torch.Generator().manual_seed(zlib.crc32(word.encode("utf-8")))
            out[0, i] = torch.randn(self.text_dim, generator=g)
        return out


class T5TextEncoder:
    """umT5-xxl from a local folder (``STREAMGEN_T5_PATH`` or the ``path`` argument)."""

    def __init__(self, path: str | None, text_len: int, device: str = "cpu", dtype=torch.float32) -> None:
        path = path or os.environ.get("STREAMGEN_T5_PATH")
        if not path or not os.path.isdir(path):
            raise FileNotFoundError(
                f"the umT5 text encoder is read from a local folder, and {path!r} is not one; "
                "set STREAMGEN_T5_PATH to a folder with the transformers T5EncoderModel and tokenizer "
                "(nothing is downloaded at run time)"
            )
        from transformers import AutoTokenizer, T5EncoderModel

        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = T5EncoderModel.from_pretrained(path, local_files_only=True, torch_dtype=dtype).to(device).eval()
        self.text_len, self.device = text_len, device

    @torch.inference_mode()
    def __call__(self, prompt: str | None) -> torch.Tensor:
        tok = self.tokenizer(prompt or "", padding="max_length", max_length=self.text_len, truncation=True, return_tensors="pt")
        hidden = self.model(tok.input_ids.to(self.device), attention_mask=tok.attention_mask.to(self.device)).last_hidden_state
        return hidden * tok.attention_mask.to(self.device)[..., None]  # Wan zeroes padding rows
