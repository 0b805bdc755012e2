"""No import circles between the project's files.

A circle (a imports b, b imports a, however indirectly) means neither file can be read, tested or
moved alone. Every import counts here, also the ones inside functions or ``TYPE_CHECKING`` blocks:
deferring an import hides a circle from Python, not from the reader. A package's ``__init__`` counts
as a file only when a name is imported from it (``from streamgen import load_pipeline``), not when a
submodule below it is (``from streamgen.models import dit``).
"""
from tests.source_layout import imports, is_project, modules


def _edges() -> dict[str, dict[str, str]]:
    """importer -> {imported module: where the first such import is (file:line)}."""
    known = modules()
    graph: dict[str, dict[str, str]] = {module: {} for module in known}
    for module in known:
        for imp in imports(module):
            target = imp.target
            while target not in known and "." in target:  # ``from a.b import name`` of a re-export
                target = target.rpartition(".")[0]
            if is_project(target) and target in known and target != module:
                graph[module].setdefault(target, imp.where())
    return graph


def _circles(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_circles_between_files():
    graph = _edges()
    circles = _circles(graph)
    lines = []
    for members in circles:
        lines.append("circle: " + ", ".join(members))
        inside = set(members)
        for module in members:
            lines += [f"  {where} {module} imports {target}" for target, where in graph[module].items() if target in inside]
    assert not circles, "import circles between project files:\n" + "\n".join(lines)


def test_the_graph_sees_known_edges():
    # The check reads real imports, also deferred ones: the pipeline builds sessions and loads
    # checkpoint folders inside a function.
    graph = _edges()
    assert "streamgen.session" in graph["streamgen.pipeline"]
    assert "streamgen.checkpoints.folders" in graph["streamgen.pipeline"]
    assert "streamgen.models.kv_cache" in graph["streamgen.session"]
