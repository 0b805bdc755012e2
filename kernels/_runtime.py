"""When to run Triton, and kernels that are jitted lazily so the interpreter switch is read at launch.

Triton reads ``TRITON_INTERPRET`` (``triton.knobs.runtime.interpret``, an uncached ``getenv``) when
``@triton.jit`` *decorates* a function: an eagerly decorated kernel is fixed to compiled or
interpreted mode by the environment at import time. :class:`LazyKernel` instead decorates on the
first launch in each mode, so only the environment at launch time matters and import order is free.
Kernels launched through it must be self-contained (no calls to other ``@triton.jit`` functions).
"""
from __future__ import annotations

import importlib.util
import os
from typing import Any, Callable

import torch

_TRUE = ("1", "true", "on", "yes")


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def interpret_enabled() -> bool:
    """``TRITON_INTERPRET`` as Triton itself reads it (at every access, from the environment)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in _TRUE


def use_triton(*tensors: torch.Tensor) -> bool:
    """True when the Triton kernel should run for these tensors: all on CUDA, or interpreting on CPU."""
    if not triton_available():
        return False
    if interpret_enabled():
        return True
    return all(t.is_cuda for t in tensors)


def next_pow2(n: int, minimum: int = 16) -> int:
    """Smallest power of two >= max(n, minimum) (Triton block sizes; 16 is tl.dot's smallest dim)."""
    p = minimum
    while p < n:
        p *= 2
    return p


class LazyKernel:
    """A kernel function that is wrapped by ``triton.jit`` (and optional autotuning) on first launch.

    ``autotune``: a function ``jitted -> autotuned`` applied in compiled mode only (the interpreter
    cannot benchmark configs). ``kernel[grid](...)`` launches like a jitted kernel;
    :attr:`autotuned` says whether the current mode's kernel picks its own meta-parameters.
    """

    def __init__(self, fn: Callable, autotune: Callable[[Any], Any] | None = None) -> None:
        self.fn = fn
        self.autotune = autotune
        self._by_mode: dict[bool, Any] = {}

    @property
    def autotuned(self) -> bool:
        return self.autotune is not None and not interpret_enabled()

    def get(self) -> Any:
        mode = interpret_enabled()
        kernel = self._by_mode.get(mode)
        if kernel is None:
            import triton

            kernel = triton.jit(self.fn)
            if self.autotune is not None and not mode:
                kernel = self.autotune(kernel)
            self._by_mode[mode] = kernel
        return kernel

    def __getitem__(self, grid: Any) -> Any:
        return self.get()[grid]
