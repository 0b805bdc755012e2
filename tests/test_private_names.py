"""No module uses another module's private (underscore) names.

An underscore name is a module's own business; once another file reaches for it, changing it breaks a
caller nobody sees. Over every project module in the installed layout (tests/source_layout.py) this
flags: importing an underscore name or an underscore module from another module, ``module._name`` on
an imported project module, and ``obj._name`` on any other object when this module does not define
``_name`` itself (a private method or attribute of a class that lives elsewhere).
"""
import ast

from tests.source_layout import ROOT, imports, is_project, modules, parse, private_part


def _own_private_names(tree: ast.Module) -> set[str]:
    """Underscore names this module defines: functions, classes, assigned names and attributes."""
    own: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            own.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            own.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _is_self(node.value):
            own.add(node.attr)  # ``self._x = ...``; ``other._x = ...`` writes someone else's attribute
    return {name for name in own if private_part(name)}


def _is_self(value: ast.expr) -> bool:
    if isinstance(value, ast.Name):
        return value.id in ("self", "cls")
    return isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "super"


def violations(module: str) -> list[str]:
    found = []
    project_aliases, outside_aliases = set(), set()
    for imp in imports(module):
        full = imp.target if imp.name is None else f"{imp.target}.{imp.name}"
        if is_project(imp.target):
            if imp.name is None:
                project_aliases.add(imp.alias or imp.target.split(".")[0])
            if imp.target != module and private_part(full):
                found.append(f"{imp.where()} imports {full} (private: {private_part(full)})")
        else:
            outside_aliases.add(imp.alias or imp.target.split(".")[0])
    tree = parse(modules()[module])
    own = _own_private_names(tree)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not private_part(node.attr) or _is_self(node.value):
            continue
        where = f"{modules()[module].relative_to(ROOT)}:{node.lineno}"
        base = node.value.id if isinstance(node.value, ast.Name) else None
        if base in project_aliases:
            found.append(f"{where} uses {ast.unparse(node)} (a private name of another module)")
        elif base not in outside_aliases and node.attr not in own:
            found.append(f"{where} uses {ast.unparse(node)} (private attribute defined in another module)")
    return found


def test_no_module_uses_another_modules_private_names():
    found = [line for module in sorted(modules()) for line in violations(module)]
    assert not found, "private names used across modules:\n" + "\n".join(found)
