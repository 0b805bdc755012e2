"""What glibc's malloc does in a fresh process, for tests/server/test_malloc_settings.py.

``python -m tests.server.malloc_probe server`` builds the server (create_app + StreamgenServer, settings from
the ``STREAMGEN_*`` environment) without running it; ``... plain`` builds nothing. Either way it then
allocates an 8 MiB block and lets four threads allocate, and prints JSON: whether the block was mmapped and
how many arenas the threads added.
"""
from __future__ import annotations

import ctypes
import json
import os
import re
import sys
import tempfile
import threading

BLOCK = 8 * 2**20  # above glibc's starting mmap threshold (128 KiB), below the 16 MiB the test sets


class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]


LIBC = ctypes.CDLL("libc.so.6")
LIBC.mallinfo2.restype = MallInfo2
LIBC.malloc.restype = ctypes.c_void_p
LIBC.malloc.argtypes = [ctypes.c_size_t]
LIBC.free.argtypes = [ctypes.c_void_p]
LIBC.fopen.restype = ctypes.c_void_p
LIBC.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
LIBC.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
LIBC.fclose.argtypes = [ctypes.c_void_p]


def arenas() -> int:
    """Arenas (heaps) glibc has, counted in malloc_info's XML."""
    with tempfile.NamedTemporaryFile(suffix=".xml") as f:
        fp = LIBC.fopen(f.name.encode(), b"w")
        LIBC.malloc_info(0, fp)
        LIBC.fclose(fp)
        return len(re.findall(r"<heap nr=", open(f.name).read()))


def main(mode: str) -> None:
    if mode == "server":
        import uvicorn

        from streamgen.server.app import create_app
        from streamgen.server.httpserver import StreamgenServer

        app = create_app()
        StreamgenServer(uvicorn.Config(app), app)
    mmapped0 = LIBC.mallinfo2().hblks
    p = LIBC.malloc(BLOCK)
    mmapped = LIBC.mallinfo2().hblks - mmapped0
    LIBC.free(p)
    before = arenas()
    go = threading.Barrier(4)

    def work():
        go.wait()  # all four alive at once: none can take an arena another one let go of
        q = LIBC.malloc(1000)
        go.wait()
        LIBC.free(q)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"block_mmapped": mmapped == 1, "new_arenas": arenas() - before, "pid": os.getpid()}))


if __name__ == "__main__":
    main(sys.argv[1])
