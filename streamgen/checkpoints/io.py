"""Checkpoint files: safetensors weights and a JSON config beside them, written atomically.

Every write goes to a temporary file in the destination's folder, is flushed to disk, and is then
moved over the destination with ``os.replace``: a reader sees the old file or the new one, never a
partial one, even if the writer dies midway.

Our own format is a folder with ``model.safetensors`` and ``config.json``::

    {"format": "streamgen", "format_version": 1, "model": {<ModelConfig fields>}, "metadata": {...}}
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from streamgen.config import ModelConfig

FORMAT = "streamgen"
FORMAT_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Run ``write(tmp_path)`` on a temporary sibling of ``path``, fsync it, then ``os.replace`` it over ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; checkpoints and shipped weights are shared files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return atomic_write(path, write)


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"expected a JSON file at {path}, found none") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None


def save_safetensors(
    tensors: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: Mapping[str, str] | None = None
) -> Path:
    """Write tensors (moved to CPU, made contiguous) to ``path`` atomically."""
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    return atomic_write(path, lambda tmp: save_file(cpu, tmp, metadata=meta))


def load_safetensors(path: str | os.PathLike, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Read every tensor of a safetensors file straight onto ``device``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"expected a safetensors file at {path}, found none")
    with open_safetensors(path, device) as f:
        return {key: f.get_tensor(key) for key in f.keys()}


@contextlib.contextmanager
def open_safetensors(path: str | os.PathLike, device: torch.device | str = "cpu"):
    """``safe_open`` whose failures (a truncated or corrupt file) are a ValueError naming the file."""
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            yield f
    except SafetensorError as err:
        raise ValueError(f"{path} is not a readable safetensors file ({err})") from None


def safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    with open_safetensors(path) as f:
        return dict(f.metadata() or {})


def save_checkpoint(
    folder: str | os.PathLike,
    config: ModelConfig,
    model_or_state: torch.nn.Module | Mapping[str, torch.Tensor],
    *,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write our format: ``folder/model.safetensors`` then ``folder/config.json`` (each atomically).

    The config is written last, so a folder whose config exists always has complete weights beside it.
    """
    folder = Path(folder)
    state = model_or_state.state_dict() if isinstance(model_or_state, torch.nn.Module) else model_or_state
    save_safetensors(state, folder / WEIGHTS_NAME, {"format": FORMAT, "layout": "wan_original"})
    record = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": config.to_dict(), "metadata": dict(metadata or {})}
    write_json(folder / CONFIG_NAME, record)
    return folder


def is_own_config(data: Any) -> bool:
    return isinstance(data, dict) and data.get("format") == FORMAT


def own_config(data: Mapping[str, Any], source: str, overrides: Mapping[str, Any] | None = None) -> ModelConfig:
    """The ModelConfig recorded in one of our ``config.json`` files, with ``overrides`` on top."""
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"{source}: format_version={version!r}, this streamgen reads version {FORMAT_VERSION}")
    fields = dict(data.get("model") or {})
    fields.update(overrides or {})
    return ModelConfig.from_dict(fields)

