"""The CLI as a real subprocess, shared by the CLI tests."""
from __future__ import annotations

import subprocess
import sys


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """``streamgen ARGS`` through the entry module, output captured, 240 s at most."""
    return subprocess.run([sys.executable, "-m", "streamgen.cli.main", *args], capture_output=True, text=True, timeout=240)
