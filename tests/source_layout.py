"""The source tree as it is installed: which file is which module, and what each file imports.

``setup.py`` maps the root folders into the ``streamgen`` namespace (``kernels/`` becomes
``streamgen.kernels`` and so on), so the checks over the project's own imports
(tests/test_private_names.py, tests/test_import_cycles.py) read every file under its installed name.
Only the source is parsed (``ast``); nothing is imported.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# installed package name -> folder in the checkout (the same table as setup.py's ROOTS)
LAYOUT = {
    "streamgen": "streamgen",
    "streamgen.kernels": "kernels",
    "streamgen.server": "server",
    "streamgen.training": "training",
    "streamgen_client": "client/streamgen_client",
}
PROJECT_ROOTS = ("streamgen", "streamgen_client")


@dataclass(frozen=True, kw_only=True)
class Import:
    """One imported thing: ``target`` is a module; ``name`` is the attribute taken from it, if any."""

    path: Path  # the importing file
    line: int
    target: str  # full module name, e.g. "streamgen.models.dit"
    name: str | None  # "CausalDiT" for ``from streamgen.models.dit import CausalDiT``; None for a module
    alias: str | None  # the local name bound (None for ``import a.b`` without ``as``)

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


@lru_cache(maxsize=1)
def modules() -> dict[str, Path]:
    """Every project module by its installed name."""
    found: dict[str, Path] = {}
    for package, folder in LAYOUT.items():
        base = ROOT / folder
        for path in sorted(base.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def is_project(module: str) -> bool:
    return module.split(".")[0] in PROJECT_ROOTS


@lru_cache(maxsize=None)
def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def imports(module: str) -> list[Import]:
    """Every import statement of a module (module level, functions and ``TYPE_CHECKING`` blocks)."""
    path = modules()[module]
    known = modules()
    found: list[Import] = []
    for node in ast.walk(parse(path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(path=path, line=node.lineno, target=alias.name, name=None, alias=alias.asname))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package_of(module, path).split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                local = alias.asname or alias.name
                submodule = f"{source}.{alias.name}"
                if submodule in known:  # ``from package import submodule``
                    found.append(Import(path=path, line=node.lineno, target=submodule, name=None, alias=local))
                else:
                    found.append(Import(path=path, line=node.lineno, target=source, name=alias.name, alias=local))
    return found


def private_part(name: str) -> str | None:
    """The first underscore-led (non-dunder) component of a dotted name, or None."""
    for part in name.split("."):
        if part.startswith("_") and not (part.startswith("__") and part.endswith("__")):
            return part
    return None
