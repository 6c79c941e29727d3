"""The package's import graph has no cycle, counting imports inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "django_tasks_hub"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for path in ROOT.rglob("*.py")
        if "migrations" not in path.parts and "__pycache__" not in path.parts
    }


def _type_checking_only(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules ``name`` imports at run time, at any depth (functions too), but
    not under ``if TYPE_CHECKING:``. ``from a import b`` counts as ``a.b`` when that is a
    module. A submodule's implicit import of its parent packages is not an edge."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _type_checking_only(node):
            for child in getattr(node, "orelse", []):
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in known else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {
        target
        for target in found
        if target in known and target != name and not name.startswith(f"{target}.")
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that returns to its start, or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done.
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := walk(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := walk(node)):
            return cycle
    return None


def import_graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(name, path, known) for name, path in found.items()}


def test_the_import_graph_has_no_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 30  # The walk found the package.
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_function_level_imports_count() -> None:
    # An import placed inside a function to dodge a cycle is still an edge of the graph.
    graph = import_graph()
    assert "django_tasks_hub.receivers" in graph["django_tasks_hub.apps"]


CELERY_EDGE = {"control", "connection_for_write", "connection_for_read", "current_app"}


def celery_edge_uses(path: Path) -> set[str]:
    """The names of Celery's app edge (remote control, broker connections, the current app)
    that ``path``'s code uses."""
    used: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and node.attr in CELERY_EDGE:
            used.add(node.attr)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("celery"):
            used.update(alias.name for alias in node.names if alias.name in CELERY_EDGE)
    return used


def test_only_the_broker_edge_talks_to_celerys_app_and_control() -> None:
    """Rule of the design: only ``broker.py`` reaches Celery's app, control and connections."""
    offenders = {
        name: used
        for name, path in modules().items()
        if name != f"{PACKAGE}.broker" and (used := celery_edge_uses(path))
    }
    assert offenders == {}
    assert celery_edge_uses(ROOT / "broker.py") >= {"control", "connection_for_write"}


def test_the_stylesheets_close_every_block() -> None:
    # One unclosed block (a media query, say) silently drops every rule after it.
    for css in (ROOT / "static").rglob("*.css"):
        depth = 0
        for number, line in enumerate(css.read_text().splitlines(), 1):
            depth += line.count("{") - line.count("}")
            assert depth >= 0, f"{css.name}:{number} closes a block it never opened"
        assert depth == 0, f"{css.name} leaves {depth} block(s) open"
