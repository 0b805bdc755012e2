"""Giving the memory of ended sessions back to the operating system.

A session's caches and decoder state are freed on the engine thread when it ends, but glibc keeps freed
heap pages in its arenas (one per thread that allocated them), so without a trim the server's RSS grows
with each connect / disconnect cycle although nothing is alive (tests/server/test_cycles.py, 300 WebRTC and
300 WebSocket cycles: +26.2 MB before the trim, +11.2 MB with it). ``release_freed_memory`` asks glibc to
return them; elsewhere (musl, macOS) it does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> bool:
    """``malloc_trim(0)`` over every arena; False where the C library has none."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
