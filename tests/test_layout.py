"""Package layout: imports inside ``src/kmshc`` run one way (no cycle, lazy imports included), between
modules and between packages: a subpackage counts as one node, so a module of ``kmshc.compare``
that imports ``kmshc.top`` inside a function, while ``top`` imports ``kmshc.compare``,
is an arrow back up even though no module imports itself through the loop."""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """``{module: modules of kmshc it imports}``, counting imports inside functions too (a lazy
    import hides a cycle from Python, not from a reader)."""
    modules = {module_name(p): p for p in SRC.joinpath("kmshc").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom) and node.module in modules:
                subs = {f"{node.module}.{a.name}" for a in node.names} & set(modules)
                edges |= subs or {node.module}
        graph[name] = edges - {name, "kmshc"}  # `from kmshc import __version__` names no module
    return graph


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """``graph`` with each subpackage of kmshc (``kmshc.compare``, ``kmshc.compare.report``, ...)
    merged into one node; the imports inside a package drop out."""
    def node(m: str) -> str:
        return ".".join(m.split(".")[:2])
    merged: dict[str, set[str]] = {}
    for m, edges in graph.items():
        merged.setdefault(node(m), set()).update(node(e) for e in edges)
    return {m: edges - {m} for m, edges in merged.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        state[m] = 2
        path.pop()
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_the_checker_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_checker_finds_a_lazy_import_back_into_a_package():
    """report imports top inside a function; top imports the package p (its ``__init__``, which
    imports tables, not report): no module cycle, but an arrow from p back up to top."""
    graph = {"kmshc.p": {"kmshc.p.tables"}, "kmshc.p.tables": set(), "kmshc.p.report": {"kmshc.top"},
             "kmshc.top": {"kmshc.p"}}
    assert find_cycle(graph) is None
    assert find_cycle(package_graph(graph)) == ["kmshc.p", "kmshc.top", "kmshc.p"]
    assert find_cycle(package_graph({**graph, "kmshc.p.report": set()})) is None


def test_no_import_cycle_in_kmshc():
    graph = import_graph()
    assert "kmshc.compare.report" in graph and "kmshc.compare.entries" in graph["kmshc.compare.tables"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_no_import_cycle_between_packages():
    graph = package_graph(import_graph())
    assert "kmshc.compare" in graph["kmshc.entry"] and "kmshc.search" in graph["kmshc.redundancy"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
