"""Text encoders that turn a prompt into ``[1, text_len, text_dim]`` tokens.

- :class:`HashTextEncoder`: a deterministic, weight-free encoder for the small presets and shipped
  models (each word maps to a fixed pseudo-random vector). It needs no download.
- :class:`UMT5TextEncoder`: Wan's umT5 encoder (transformers' ``UMT5EncoderModel``), read by
  :func:`load_umt5` from a diffusers ``text_encoder/`` + ``tokenizer/`` folder or from Wan's original
  ``models_t5_umt5-xxl-enc-bf16.pth`` plus a tokenizer folder. Nothing is ever downloaded.
"""
from __future__ import annotations

import html
import re
import zlib
from collections import OrderedDict
from pathlib import Path

import torch

from streamgen.text_umt5_keys import TIED, config_from_original, original_to_hf_name


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


def clean_prompt(prompt: str | None, max_chars: int | None = None) -> str:
    """Wan's prompt cleaning: HTML entities unescaped, runs of whitespace collapsed, ends stripped.
    ``max_chars``: cut the text first (a prompt from the network may be any length)."""
    text = "" if prompt is None else str(prompt)
    text = html.unescape(html.unescape(text[:max_chars] if max_chars else text))
    return re.sub(r"\s+", " ", text).strip()


class UMT5TextEncoder:
    """A prompt -> ``[1, text_len, d_model]`` float32 on ``device``, as Wan conditions on it: the
    encoder's output for the real tokens (the prompt and its end token), zero rows after them.

    Embeddings are kept per cleaned prompt in a small LRU (``cache_size``). ``offload``: the model
    waits on the CPU and comes to ``device`` only to encode (what a GPU with little memory needs)."""

    def __init__(self, model: torch.nn.Module, tokenizer, *, device: str | torch.device = "cpu",
                 text_len: int = 512, offload: bool = False, cache_size: int = 8) -> None:
        # text_len 512: Wan's text length (its cross-attention sees 512 tokens, the padding zeroed).
        # cache_size 8: a session switches between a few prompts; 8 x 512 x 4096 bf16 is 32 MB.
        self.model, self.tokenizer = model.eval().requires_grad_(False), tokenizer
        self.device, self.text_len, self.offload, self.cache_size = torch.device(device), text_len, offload, cache_size
        self.text_dim = int(model.config.d_model)
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.model.to("cpu" if offload else self.device)

    @torch.inference_mode()
    def encode(self, prompt: str | None) -> torch.Tensor:
        """Run the encoder (no cache): ``[1, text_len, d_model]`` float32 on ``device``."""
        tok = self.tokenizer([clean_prompt(prompt)], padding="max_length", max_length=self.text_len,
                             truncation=True, add_special_tokens=True, return_tensors="pt")
        ids, mask = tok.input_ids.to(self.device), tok.attention_mask.to(self.device)  # [1, L] each
        if self.offload:
            self.model.to(self.device)
        try:
            hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()  # [1, L, D]
        finally:
            if self.offload:
                self.model.to("cpu")
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
        return hidden * mask[..., None]  # rows after the real length become zero, as Wan cuts and pads them

    @property
    def cached_prompts(self) -> list[str]:
        """The cached (cleaned) prompts, least recently used first."""
        return list(self._cache)

    def __call__(self, prompt: str | None) -> torch.Tensor:
        # 16 characters per token of text_len: more than any real prompt uses, so the cut never changes
        # an embedding, and a huge prompt costs no more than a long one.
        key = clean_prompt(prompt, max_chars=16 * self.text_len)
        hit = self._cache.get(key)
        if hit is None:
            hit = self.encode(key)
            self._cache[key] = hit
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)  # least recently used
        else:
            self._cache.move_to_end(key)
        return hit


def _missing(path: Path, what: str, where: str) -> FileNotFoundError:
    return FileNotFoundError(f"umT5: {what} not found at {path} ({where}; nothing is downloaded)")


def _model_from_folder(path: Path, dtype: torch.dtype) -> torch.nn.Module:
    from transformers import UMT5EncoderModel

    if not (path / "config.json").is_file():
        raise _missing(path / "config.json", "config.json", "a diffusers text_encoder/ folder holds it")
    if not any((path / n).is_file() for n in ("model.safetensors", "model.safetensors.index.json")):
        raise _missing(path / "model.safetensors", "the weights", "a text_encoder/ folder holds model.safetensors "
                       "or shards with model.safetensors.index.json")
    return UMT5EncoderModel.from_pretrained(path, dtype=dtype, local_files_only=True)


def _model_from_original(path: Path, dtype: torch.dtype) -> torch.nn.Module:
    """``UMT5EncoderModel`` from Wan's original state dict, config read from its shapes."""
    from transformers import UMT5Config, UMT5EncoderModel

    sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(sd, dict):
        raise ValueError(f"umT5: {path} holds a {type(sd).__name__}, not a state dict")
    config = UMT5Config(**config_from_original(sd))
    with torch.device("meta"):
        model = UMT5EncoderModel(config)
    want = set(model.state_dict())
    mapped, unexpected = {}, []
    for name, tensor in sd.items():
        try:
            mapped[original_to_hf_name(name)] = tensor.to(dtype)
        except ValueError:
            unexpected.append(name)
    mapped[TIED] = mapped.get("shared.weight")  # the encoder's tied copy of the embedding
    missing = sorted(k for k in want if mapped.get(k) is None)
    if missing or unexpected:
        raise ValueError(f"umT5: {path} does not fit umT5's encoder: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.load_state_dict(mapped, strict=True, assign=True)
    return model


def load_umt5(path: str | Path, tokenizer: str | Path | None = None, device: str | torch.device = "cpu",
              dtype: torch.dtype = torch.float32, text_len: int = 512, offload: bool = False) -> UMT5TextEncoder:
    """Wan's umT5 text encoder.

    ``path``: a diffusers ``text_encoder/`` folder (its tokenizer defaults to the sibling ``tokenizer/``)
    or Wan's original ``models_t5_umt5-xxl-enc-bf16.pth`` (its tokenizer defaults to the
    ``google/umt5-xxl/`` folder beside it, as Wan's checkpoint folders ship it). ``offload``: keep the
    model on the CPU between encodings."""
    from transformers import AutoTokenizer

    path = Path(path)
    if path.is_dir():
        model = _model_from_folder(path, dtype)
        tok_path, where = Path(tokenizer) if tokenizer else path.parent / "tokenizer", "the tokenizer/ folder beside text_encoder/"
    elif path.is_file():
        model = _model_from_original(path, dtype)
        tok_path, where = Path(tokenizer) if tokenizer else path.parent / "google" / "umt5-xxl", "google/umt5-xxl/ beside the .pth"
    else:
        raise _missing(path, "the text encoder", "give a diffusers text_encoder/ folder or models_t5_umt5-xxl-enc-bf16.pth")
    if tokenizer:
        where = "the tokenizer folder given"
    if not tok_path.is_dir() or not any((tok_path / n).is_file() for n in ("tokenizer.json", "spiece.model")):
        raise _missing(tok_path, "the tokenizer (tokenizer.json or spiece.model)", f"looked in {where}")
    tok = AutoTokenizer.from_pretrained(tok_path, local_files_only=True)
    return UMT5TextEncoder(model, tok, device=device, text_len=text_len, offload=offload)
