"""The server process's C heap: how glibc's malloc is set up at start-up, and giving ended sessions' memory back.

A session's caches and decoder state are freed on the engine thread when it ends, but glibc keeps freed
heap pages in its arenas (one per thread that allocated them), so without a trim the server's RSS grows
with each connect / disconnect cycle although nothing is alive (tests/server/test_cycles.py, 300 WebRTC and
300 WebSocket cycles: +26.2 MB before the trim, +11.2 MB with it). ``release_freed_memory`` asks glibc to
return them. ``configure_allocator`` applies the server's malloc settings (``mallopt``) before any server
thread starts; docs/serving.md ("Memory") says what each one buys. Elsewhere (musl, macOS) both do nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

log = logging.getLogger(__name__)

# mallopt parameters (glibc's malloc.h).
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
# The ceiling of glibc's own dynamic mmap threshold on 64-bit machines (DEFAULT_MMAP_THRESHOLD_MAX);
# a fixed one above it would keep buffers of any size in the heaps.
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024


@functools.lru_cache(maxsize=1)
def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (it has ``mallopt`` and ``malloc_trim``), else None."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is None or not (hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt")):
            return None
    except OSError:
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc


def release_freed_memory() -> bool:
    """``malloc_trim(0)`` over every arena; False where the C library is not glibc."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


@functools.lru_cache(maxsize=1)
def _say_not_glibc() -> None:
    log.info("malloc settings not applied: the C library is not glibc (nothing to set)")


def configure_allocator(*, arena_max: int | None, mmap_threshold: int | None) -> dict[str, int]:
    """Apply glibc's ``M_ARENA_MAX`` and a fixed ``M_MMAP_THRESHOLD`` (None: leave glibc's own) and return
    what was applied; {} where the C library is not glibc (said in the log once). Call it before the
    threads whose allocations it should govern start: a thread keeps the arena it was given.
    ValueError (one line, naming the value) when glibc refuses a value."""
    libc = _glibc()
    if libc is None:
        _say_not_glibc()
        return {}
    applied = {}
    for name, param, value in (("arena_max", M_ARENA_MAX, arena_max),
                               ("mmap_threshold", M_MMAP_THRESHOLD, mmap_threshold)):
        if value is None:
            continue
        if libc.mallopt(param, value) != 1:
            raise ValueError(f"malloc {name}={value}: refused by glibc's mallopt")
        applied[name] = value
    if applied:
        log.info("malloc settings applied: %s", ", ".join(f"{k}={v}" for k, v in applied.items()))
    return applied
