"""Key renaming by prefix tables, used in both directions.

A table is a list of ``(ours, theirs)`` module-path pairs. A key matches a pair when it equals the
path (a bare parameter such as ``modulation``) or starts with ``path + "."`` (a module's ``weight`` /
``bias``). Keys under ``blocks.N.`` are matched against the per-block table with ``N`` carried over.
"""
from __future__ import annotations

import re
from typing import Mapping, Sequence

import torch

Table = Sequence[tuple[str, str]]
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")


def _rename_one(key: str, table: Table, reverse: bool) -> str | None:
    for ours, theirs in table:
        src, dst = (theirs, ours) if reverse else (ours, theirs)
        if key == src:
            return dst
        if key.startswith(src + "."):
            return dst + key[len(src):]
    return None


def rename_key(key: str, top: Table, block: Table, *, reverse: bool) -> str | None:
    """Rename one key (ours -> theirs, or theirs -> ours with ``reverse``); None when no rule covers it."""
    m = _BLOCK.match(key)
    if m:
        inner = _rename_one(m.group(2), block, reverse)
        return None if inner is None else f"blocks.{m.group(1)}.{inner}"
    return _rename_one(key, top, reverse)


def rename_state_dict(
    sd: Mapping[str, torch.Tensor], top: Table, block: Table, *, reverse: bool, layout: str
) -> dict[str, torch.Tensor]:
    """Rename every key; the tensors are the same objects (no copy). Unknown keys raise, naming them."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in sd.items():
        new = rename_key(key, top, block, reverse=reverse)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        shown = ", ".join(unknown[:8]) + (f" ... ({len(unknown)} in all)" if len(unknown) > 8 else "")
        raise KeyError(
            f"{layout} state dict has keys with no mapping: {shown}. Only the text-to-video Wan2.1 "
            "transformer is supported (image-conditioning weights such as img_emb / k_img are not)."
        )
    return out


def block_indices(keys) -> list[int]:
    """Sorted distinct ``N`` of the ``blocks.N.`` keys."""
    return sorted({int(m.group(1)) for k in keys if (m := _BLOCK.match(k))})
