"""Speed settings of a pipeline, applied from outside the model code, in this one place.

``accelerate(pipe, dtype=..., compile=..., quantize=...)`` changes how the transformer blocks of a loaded
pipeline compute, never what the model code says:

- ``dtype="bfloat16"``: each block's linear layers keep bf16 weights and multiply in bf16; their inputs
  and outputs, the residual stream, the norms, the time embedding and the decoders stay fp32. This only
  pays on CPUs with native bf16 matrix units (avx512_bf16 / AMX); elsewhere it is slower than fp32
  (measured in docs/benchmarks.md).
- ``quantize="int8"``: each block's linear layers become dynamic int8 linears (per-output-channel int8
  weights, activations quantised per call; ``torch.ao`` dynamic quantisation, CPU only).
- ``compile=True``: ``torch.compile`` (inductor) of the block step (``streamgen.compile``: whole blocks
  on CUDA, each block's pure parts on the CPU); rolling steps do not recompile once the window is full
  (tests/test_acceleration.py).
- ``feature_cache=FeatureCacheSpec(...)`` (or ``"reuse@1"``): some denoising steps of each block run only
  the shallow layers and reuse the deep layers' residual of the previous step (``streamgen.feature_cache``,
  which says exactly what that approximates).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from streamgen.compile import compile_block_step
from streamgen.config import MATMUL_DTYPES as DTYPES
from streamgen.config import QUANTIZE_MODES as QUANTIZE
from streamgen.feature_cache_spec import FeatureCacheSpec, parse_feature_cache


@dataclass(kw_only=True)
class Acceleration:
    """The speed settings ``accelerate`` applies (recorded on the pipeline as ``pipe.acceleration``)."""

    # None / "float32": the loaded model's own precision. "bfloat16": bf16 weights in the blocks' linears.
    dtype: str | None = None
    # torch.compile the blocks' pure parts; off by default since the first blocks pay the compilation.
    compile: bool = False
    # None: float linears. "int8": dynamic int8 linears in the blocks (CPU only).
    quantize: str | None = None
    # None: every layer at every step. A spec: feature caching between denoising steps (streamgen.feature_cache).
    feature_cache: FeatureCacheSpec | None = None

    def __post_init__(self) -> None:
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ValueError(f"acceleration dtype {self.dtype!r}: choose one of {DTYPES}")
        if self.quantize is not None and self.quantize not in QUANTIZE:
            raise ValueError(f"acceleration quantize {self.quantize!r}: choose one of {QUANTIZE}")
        if self.quantize is not None and self.dtype == "bfloat16":
            raise ValueError("acceleration: quantize='int8' and dtype='bfloat16' exclude each other (pick one)")

    def describe(self) -> dict:
        return {"matmul_dtype": self.dtype or "model", "compile": self.compile, "quantize": self.quantize,
                "feature_cache": self.feature_cache.describe() if self.feature_cache is not None else None}


class Bf16Linear(nn.Module):
    """A linear layer whose weights are stored and multiplied in bf16; fp32 (the input's dtype) in and out.

    Keeps ``weight`` / ``bias`` names, so the block's state dict keys do not change.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight = nn.Parameter(linear.weight.detach().to(torch.bfloat16), requires_grad=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().to(torch.bfloat16),
                                                                  requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.to(torch.bfloat16), self.weight, self.bias).to(x.dtype)


def _swap_linears(module: nn.Module, make) -> int:
    """Replace every ``nn.Linear`` below ``module`` by ``make(linear)``; returns how many were replaced."""
    count = 0
    for name, child in module.named_children():
        if type(child) is nn.Linear:
            setattr(module, name, make(child))
            count += 1
        else:
            count += _swap_linears(child, make)
    return count


def _quantize_int8(block: nn.Module) -> nn.Module:
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():  # torch.ao's deprecation notice; the API is the one shipped with torch 2.11
        warnings.simplefilter("ignore", DeprecationWarning)
        return quantize_dynamic(block, {nn.Linear: per_channel_dynamic_qconfig}, inplace=True)


def accelerate(pipe, *, dtype: str | None = None, compile: bool = False, quantize: str | None = None,
               feature_cache: FeatureCacheSpec | str | None = None):
    """Apply the speed settings to ``pipe.model``'s blocks in place; returns ``pipe``.

    Call once per pipeline, before its first session (a second call raises).
    """
    if isinstance(feature_cache, str):
        feature_cache = parse_feature_cache(feature_cache)
    settings = Acceleration(dtype=dtype, compile=compile, quantize=quantize, feature_cache=feature_cache)
    if dtype is not None and next(pipe.model.parameters()).dtype == getattr(torch, dtype):
        dtype = None  # the model already multiplies in that dtype (a bf16 CUDA pipeline)
    if getattr(pipe, "acceleration", None) is not None:
        raise ValueError(f"pipeline {pipe.name!r} is already accelerated ({pipe.acceleration.describe()})")
    model = pipe.model
    if (dtype == "bfloat16" or quantize) and next(model.parameters()).dtype != torch.float32:
        raise ValueError(f"acceleration dtype={dtype!r} quantize={quantize!r} needs an fp32 model; "
                         f"pipeline {pipe.name!r} holds {next(model.parameters()).dtype}")
    if quantize and pipe.device.type != "cpu":
        raise ValueError(f"quantize={quantize!r} runs on the CPU only; pipeline {pipe.name!r} is on {pipe.device}")
    for block in model.blocks:
        if dtype == "bfloat16":
            _swap_linears(block, Bf16Linear)
        if quantize == "int8":
            _quantize_int8(block)
    if compile:
        compile_block_step(pipe)  # the one torch.compile of the block step (streamgen.compile)
    if feature_cache is not None:
        from streamgen.feature_cache import install_feature_cache

        pipe.feature_cache = install_feature_cache(pipe, feature_cache)
        # what was applied (the layer and steps a default or a predictor file chose), for describe()
        settings.feature_cache = replace(feature_cache, layer=pipe.feature_cache.layer,
                                         reuse_steps=pipe.feature_cache.reuse_steps)
    pipe.acceleration = settings
    return pipe
