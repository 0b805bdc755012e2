"""``--quantize`` and ``--feature-cache``: the speed settings beyond ``--dtype`` / ``--compile``, one
implementation shared by bench, generate, evaluate and serve.

Torch-free, so building a parser stays fast; ``streamgen.acceleration`` applies them.
"""
from __future__ import annotations

import argparse

from streamgen.config import QUANTIZE_MODES
from streamgen.feature_cache_spec import FEATURE_CACHE_MODES, parse_feature_cache


def feature_cache_arg(text: str) -> str:
    """argparse type of ``--feature-cache``: the checked text (``load_pipeline`` parses it again)."""
    parse_feature_cache(text)
    return text


feature_cache_arg.__name__ = f"feature cache ({' or '.join(FEATURE_CACHE_MODES)}, optionally @LAYER and :PREDICTOR)"


def add_speed_flags(p: argparse.ArgumentParser, *, precision: bool = False) -> None:
    """``--quantize`` and ``--feature-cache``; with ``precision`` also ``--dtype`` and ``--compile``, for
    commands whose other options do not already have them (evaluate)."""
    p.add_argument("--quantize", choices=QUANTIZE_MODES, default=None,
                   help="dynamic int8 linears in the transformer blocks (CPU only; streamgen.acceleration)")
    p.add_argument("--feature-cache", type=feature_cache_arg, default=None, metavar="MODE[@K][:PREDICTOR]",
                   help="reuse the deep layers' features of the previous denoising step on every other step: "
                        "'reuse' (training-free) or 'learned' (the model folder's predictor, or the :PREDICTOR "
                        "file), from layer K on (default: half the layers, or the predictor's; docs/benchmarks.md)")
    if precision:
        p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                       help="model dtype (default: bf16 on CUDA, fp32 on CPU)")
        p.add_argument("--compile", action="store_true", help="torch.compile the block step (inductor)")


def speed_settings(args: argparse.Namespace) -> dict:
    """``load_pipeline`` keywords of ``--quantize`` / ``--feature-cache`` (``--dtype`` and ``--compile`` are
    passed by the caller, which has them either way)."""
    return {"quantize": args.quantize, "feature_cache": args.feature_cache}
