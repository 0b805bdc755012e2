"""The block step through ``torch.compile``: the one compile of the speed settings that
``streamgen.acceleration.accelerate`` applies from outside the model code.

``compile_block_step(pipe)`` compiles each ``DiTBlock`` of the pipeline's model, on CUDA with
``mode="max-autotune-no-cudagraphs"`` (CUDA graphs stay off: the rolling cache's read length changes
from block to block until the window is full, and a graph per length would pin their memory). The
blocks are the whole per-step cost; the cache bookkeeping (``RollingKVCache.plan``) is host code and
stays eager. ``dynamic=False``: shapes repeat once the window is full, so each length compiles once.
On the CPU the same call uses inductor's default mode (C++ backend); what it gains there is measured
in docs/benchmarks.md.
"""
from __future__ import annotations

import torch

MODE = "max-autotune-no-cudagraphs"


def compile_block_step(pipe, mode: str | None = None) -> None:
    """Compile every transformer block of ``pipe.model`` in place; marks ``pipe.compiled``.

    ``mode``: default ``MODE`` on CUDA, inductor's default on the CPU (its max-autotune benchmarks C++
    GEMM templates for minutes and the matrix products stay oneDNN's anyway).
    """
    if getattr(pipe, "compiled", False):
        return
    if mode is None:
        mode = MODE if pipe.device.type == "cuda" else "default"
    for block in pipe.model.blocks:
        block.compile(mode=mode, dynamic=False)
    pipe.compiled = True
