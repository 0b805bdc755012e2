"""What every command checks before it does any work, so that a bad input costs one line and exit code 2.

``Parser`` replaces argparse's usage dump with one ``prog: error: ...`` line; ``UsageError`` is what the
checks raise, ``loading`` turns a loader's ValueError / FileNotFoundError into one, and ``run_command``
turns it into that line. Used by ``generate``, ``bench``, ``serve``, ``train`` and ``evaluate`` alike.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import Callable, NoReturn, TypeVar

T = TypeVar("T")

EXIT_USAGE = 2  # the conventional exit code of a command-line usage error (argparse's too)


class UsageError(Exception):
    """A bad argument: its message names the bad value and, where one exists, the way out."""


class Parser(argparse.ArgumentParser):
    """argparse with one error line (``prog: error: ... (see --help)``) instead of the usage text."""

    def error(self, message: str) -> NoReturn:
        fail(self.prog, f"{message} (see {self.prog} --help)")


def report(prog: str, message: object) -> int:
    """Print ``prog: error: message`` as one line on stderr; returns the exit code (2)."""
    first = " ".join(str(message).split())  # one line, whatever the message held
    print(f"{prog}: error: {first}", file=sys.stderr)
    return EXIT_USAGE


def fail(prog: str, message: object) -> NoReturn:
    raise SystemExit(report(prog, message))


def run_command(prog: str, fn: Callable[[], T]) -> T:
    """Run ``fn``; a UsageError becomes one line and exit code 2 (anything else is a bug and says so)."""
    try:
        return fn()
    except UsageError as err:
        fail(prog, str(err))


@contextlib.contextmanager
def loading(what: str):
    """Wraps a model / data load: the loaders' ValueError, FileNotFoundError and KeyError name the bad file or
    value (streamgen.checkpoints), so they become a UsageError about ``what``."""
    try:
        yield
    except (ValueError, FileNotFoundError, KeyError) as err:
        detail = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise UsageError(f"{what}: {detail}") from None


def check_model(name: str) -> None:
    """A preset, a shipped default, an existing folder or generator checkpoint file (a Self-Forcing / LongLive
    ``.pt``, docs/checkpoints.md); a path that does not exist is named as such."""
    from streamgen.presets import PRESETS
    from streamgen.pipeline import shipped_models

    if name in PRESETS or name in shipped_models():
        return
    if os.path.exists(name):
        if not os.path.isdir(name) and not name.endswith((".pt", ".pth", ".ckpt", ".bin", ".safetensors")):
            raise UsageError(f"--model {name}: a file that is not a weights file (.pt, .pth, .ckpt, .bin, .safetensors); "
                             "give the checkpoint folder or the generator checkpoint itself")
        return
    if os.sep in name or name.startswith(".") or name.startswith("~"):
        raise UsageError(f"--model {name}: the path does not exist")
    raise UsageError(f"--model {name!r}: unknown model; not a preset {sorted(PRESETS)}, not a shipped "
                     f"default {shipped_models()}, and no folder of that name")


def check_device(device: str | None, option: str = "--device") -> None:
    """``cpu``, ``cuda`` or ``cuda:N`` that this machine has."""
    if device is None:
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise UsageError(f"{option} {device!r}: not a device (cpu, cuda, cuda:N)") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UsageError(f"{option} {device}: this machine has no CUDA GPU (torch {torch.__version__}); use cpu")
        if dev.index is not None and dev.index >= count:
            raise UsageError(f"{option} {device}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    elif dev.type not in ("cpu", "cuda"):
        raise UsageError(f"{option} {device}: streamgen runs on cpu or cuda")


def check_attention(backend: str | None, device: str | None) -> None:
    """An attention backend this machine has (``streamgen info`` lists them)."""
    if backend is None:
        return
    from streamgen.models.attention import available_backends

    have = available_backends()
    if backend not in have:
        hint = " (flash-attn is not installed or there is no CUDA GPU)" if backend == "flash" else ""
        raise UsageError(f"--attention {backend}: not available on this machine{hint}; available: {have}")
    if backend in ("flash", "triton"):
        from streamgen.pipeline import default_device

        resolved = device or default_device()
        if not resolved.startswith("cuda"):
            raise UsageError(f"--attention {backend}: runs on a CUDA device, not {resolved}")


def check_output_file(path: str, option: str = "-o") -> None:
    """A file that can be created: its folder exists and is writable, and it is not a folder itself."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise UsageError(f"{option} {path}: is a folder, not a file")
    if not parent.is_dir():
        raise UsageError(f"{option} {path}: the folder {parent} does not exist")
    existed = p.exists()
    try:  # opening it is the only check that also holds for root, read-only mounts and /proc
        with open(p, "ab"):
            pass
    except OSError as err:
        raise UsageError(f"{option} {path}: not writable ({err.strerror})") from None
    if not existed:
        p.unlink(missing_ok=True)


def check_output_folder(path: str, option: str = "--out") -> None:
    """A folder that can be written: created when missing (the run creates it anyway), then probed."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"{option} {path}: is a file, not a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=p):
            pass
    except OSError as err:
        raise UsageError(f"{option} {path}: not writable ({err.strerror})") from None


def check_port(host: str, port: int) -> None:
    """The address can be bound now (checked before the model loads, so a busy port fails at once)."""
    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port}: not a port (0-65535)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise UsageError(f"--host {host}: cannot resolve it ({err.strerror})") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds it
        try:
            s.bind(addr)
        except OSError as err:
            raise UsageError(f"--port {port}: cannot listen on {host}:{port} ({err.strerror})") from None
