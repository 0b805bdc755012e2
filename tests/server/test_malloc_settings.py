"""The server's malloc settings (server/memory.py): applied by the server in a fresh process, refused when bad."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from streamgen.server.memory import MMAP_THRESHOLD_MAX
from streamgen.server.settings import ServerSettings

ROOT = Path(__file__).resolve().parents[2]


def _glibc() -> bool:
    try:
        return sys.platform.startswith("linux") and bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError):  # a C library without the name (musl)
        return False


def _probe(mode: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMGEN_MALLOC", "MALLOC_"))}
    proc = subprocess.run([sys.executable, "-m", "tests.server.malloc_probe", mode], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**clean, "STREAMGEN_MODEL": "tiny", **env})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not _glibc(), reason="mallopt is glibc's")
def test_the_server_applies_its_malloc_settings():
    plain = _probe("plain")
    # glibc's own behaviour: an 8 MiB block gets pages of its own, and each new thread gets an arena of its own.
    assert plain["block_mmapped"] and plain["new_arenas"] >= 3, plain
    served = _probe("server", STREAMGEN_MALLOC_MMAP_THRESHOLD=str(16 * 2**20), STREAMGEN_MALLOC_ARENA_MAX="1")
    assert not served["block_mmapped"] and served["new_arenas"] == 0, served


def test_bad_malloc_settings_are_refused_in_one_line():
    for field, value in (("malloc_arena_max", 0), ("malloc_mmap_threshold", 100),
                         ("malloc_mmap_threshold", MMAP_THRESHOLD_MAX + 1)):
        with pytest.raises(ValidationError) as e:
            ServerSettings(model="tiny", **{field: value})
        lines = [ln for ln in str(e.value).splitlines() if f"{field}={value}" in ln]
        assert len(lines) == 1, str(e.value)
    proc = subprocess.run([sys.executable, "-m", "streamgen.server", "--port", "0"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "STREAMGEN_MALLOC_ARENA_MAX": "-1"})
    assert proc.returncode == 2 and "malloc_arena_max=-1" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
