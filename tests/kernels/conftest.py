"""Kernel tests run the Triton kernels on the CPU through the interpreter.

Triton reads ``TRITON_INTERPRET`` whenever a kernel is decorated; ``streamgen.kernels`` decorates
lazily at launch and lends the interpreter interpreted copies of ``tl.sum`` & co. when ``triton`` was
imported earlier in compiled mode (``kernels/runtime.py``; other test folders import it through
``torch._dynamo``), so setting it here, at collection, is early enough for every test of the session.
``setdefault`` keeps an explicit ``TRITON_INTERPRET=0``, which ``benchmarks/gpu_check.sh`` sets to run
the ``gpu``-marked tests compiled on CUDA.
"""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from streamgen.kernels.runtime import interpret_enabled, triton_available  # noqa: E402

# Tolerances by dtype: >= 1-2 ulp of the output (the interpreter truncates bf16 instead of rounding).
TOL = {
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float16: dict(rtol=2e-3, atol=2e-3),
    torch.bfloat16: dict(rtol=3e-2, atol=3e-2),
}


@pytest.fixture
def interpreted() -> None:
    """Skip unless the kernels really run on CPU tensors (interpreter on, triton installed)."""
    if not triton_available():
        pytest.skip("triton is not installed")
    if not interpret_enabled():
        pytest.skip("TRITON_INTERPRET is not 1: CPU tensors would take the reference path")


@pytest.fixture
def cuda_compiled() -> None:
    """Skip unless a CUDA device is present and the kernels are compiled (not interpreted)."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if interpret_enabled():
        pytest.skip("TRITON_INTERPRET=1: run GPU tests with TRITON_INTERPRET=0")


@pytest.fixture
def tol() -> dict:
    """``tol[dtype]`` -> ``dict(rtol=..., atol=...)`` for ``torch.testing.assert_close``."""
    return TOL
