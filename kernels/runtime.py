"""When to run Triton, and kernels that are jitted lazily so the interpreter switch is read at launch.

Triton reads ``TRITON_INTERPRET`` (``triton.knobs.runtime.interpret``, an uncached ``getenv``) when
``@triton.jit`` *decorates* a function: an eagerly decorated kernel is fixed to compiled or
interpreted mode by the environment at import time, and so is Triton's own library of ``@jit``
functions (``tl.sum``, ``tl.max``, ...), decorated when ``triton`` is first imported (``import
torch._dynamo`` imports it). :class:`LazyKernel` decorates on the first launch in each mode, and an
interpreted launch lends the interpreter interpreted copies of the library functions when ``triton``
was imported before ``TRITON_INTERPRET=1`` was set; so only the environment at launch time matters.
Kernels launched through it must not call ``@triton.jit`` helpers of their own.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
from typing import Any, Callable, Iterator

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
        launcher = self.get()[grid]
        if not interpret_enabled():
            return launcher

        def interpreted(*args: Any, **kwargs: Any) -> Any:
            with _interpretable_stdlib():
                return launcher(*args, **kwargs)

        return interpreted


@contextlib.contextmanager
def _interpretable_stdlib() -> Iterator[None]:
    """Swap compiled-mode ``tl.*`` library functions for interpreted ones during one launch.

    Needed only when ``triton`` was imported while ``TRITON_INTERPRET`` was off: interpreted code
    cannot call a compiled-mode ``JITFunction`` ("Cannot call @triton.jit'd outside of the scope of
    a kernel"). Reductions keep their fast path: the interpreter recognises the combine functions
    (``tl.standard._sum_combine``, ...) by identity, and those objects are left untouched.
    """
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    modules = (tl, tl.standard)
    saved = [(m, name, getattr(m, name)) for m in modules for name in dir(m)
             if type(getattr(m, name)) is JITFunction and not name.startswith("_")]
    try:
        for module, name, fn in saved:
            setattr(module, name, InterpretedFunction(fn.fn))
        yield
    finally:
        for module, name, fn in saved:
            setattr(module, name, fn)
