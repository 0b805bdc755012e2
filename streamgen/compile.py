"""The block step through ``torch.compile``: the one compile of the speed settings that
``streamgen.acceleration.accelerate`` applies from outside the model code.

``compile_block_step(pipe)`` compiles each ``DiTBlock`` of the pipeline's model, on CUDA with
``mode="max-autotune-no-cudagraphs"`` (CUDA graphs stay off: the rolling cache's read length changes
from block to block until the window is full, and a graph per length would pin their memory). The
blocks are the whole per-step cost; the cache bookkeeping (``RollingKVCache.plan``) is host code and
stays eager. ``dynamic=False``: shapes repeat once the window is full, so each length compiles once.
On the CPU it compiles less (see ``compile_block_step``); what it gains there is measured in
docs/benchmarks.md: nothing for the shipped ``world`` (CPU per batched step 1.00x of eager, four sessions),
with no graph break and no recompile while the window rolls, but three new graphs for every new batch
size (``dynamic=False``), each a compile of about a minute and a half on a loaded 2-core CPU. The compiled
parts are the blocks' elementwise ops, linears and cross-attention; the step's time is in the matrix
products and attention (library kernels, compiled or not), the cache reads and writes and the decoders,
which stay eager.
"""
from __future__ import annotations

import torch

MODE = "max-autotune-no-cudagraphs"


def compile_block_step(pipe, mode: str | None = None) -> None:
    """Compile every transformer block of ``pipe.model`` in place; marks ``pipe.compiled``.

    ``mode``: default ``MODE`` on CUDA. On the CPU (no mode given) only each block's pure parts go
    through inductor's default mode: the input modulation and everything after self-attention. Whole
    blocks take minutes to compile on a 2-core CPU (a graph per cache length) and the matrix products
    stay oneDNN's anyway; the cache write / read stays eager, so rolling steps never recompile.
    """
    if getattr(pipe, "compiled", False):
        return
    for block in pipe.model.blocks:
        if pipe.device.type == "cuda" or mode is not None:
            block.compile(mode=mode or MODE, dynamic=False)
        else:  # CPU: the pure parts only; instance attributes shadow the methods DiTBlock.forward calls
            block.attn_input = torch.compile(block.attn_input, dynamic=False)
            block.finish = torch.compile(block.finish, dynamic=False)
    pipe.compiled = True
