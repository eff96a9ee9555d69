"""Imports inside ``modules/`` run one way: every module imports, and the graph of what each module imports (read
from the source, lazy imports in functions included) has no cycle. A cycle works only in the one import order
that happens to break it (a weights module importing its nets while the nets import it to register it), so it
is kept out entirely.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = "modules"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


SOURCES = {_module_name(p): p for p in sorted((REPO / PACKAGE).rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported_names(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """The dotted names ``tree`` imports (``from X import Y``: ``X.Y``, a submodule or a name defined in ``X``),
    relative imports resolved against ``module``; imports made only for type checkers are skipped."""
    names: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.update(base if alias.name == "*" else f"{base}.{alias.name}" for alias in node.names)
        stack.extend(ast.iter_child_nodes(node))
    return names


def _resolve(name: str) -> str | None:
    """The module of ``modules/`` that importing ``name`` runs: the longest prefix of it that is a source file."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in SOURCES:
            return candidate
    return None


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of ``modules/`` it imports by name. The parent packages that Python initialises on the
    way to a submodule are not edges: a package ``__init__`` importing its children is how a family registers its
    models, and the children import their siblings, not the package."""
    graph: dict[str, set[str]] = {}
    for module, path in SOURCES.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        targets = {_resolve(n) for n in _imported_names(tree, module, path.name == "__init__.py")}
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (or a module importing itself), by Tarjan."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_the_import_graph_has_no_cycle() -> None:
    graph = import_graph()
    assert "modules.nets.video.x3d" in graph["modules.nets.video.x3d_weights"]  # the graph sees real imports
    cycles = find_cycles(graph)
    assert not cycles, "import cycles (break each by moving the import that points back): " + "; ".join(
        " <-> ".join(c) for c in cycles
    )


def test_a_cycle_is_found() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"a"}}) == [["a"]] and find_cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("module", sorted(SOURCES))
def test_every_module_imports(module: str) -> None:
    importlib.import_module(module)
