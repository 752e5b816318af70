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


# Layers, lowest first: a module may import its own layer and the ones below, never one above.
LAYERS = [
    {"kmshc.types", "kmshc.stats"},
    {"kmshc.tasks"},
    {"kmshc.engine"},
    {"kmshc.experiment"},
    {"kmshc.train", "kmshc.rank", "kmshc.search"},            # learn, rank, search and certify
    {"kmshc.compare", "kmshc.view", "kmshc.redundancy", "kmshc.toy"},
    {"kmshc.api"},
    {"kmshc.entry"},
    {"kmshc.cli", "kmshc.__main__", "kmshc"},
]


def layer(module: str) -> int:
    node = ".".join(module.split(".")[:2])
    return next(i for i, names in enumerate(LAYERS) if node in names)


def test_every_module_has_a_layer_and_the_root_stays_small():
    graph = import_graph()
    assert all(layer(m) >= 0 for m in graph)
    root = [p.stem for p in SRC.joinpath("kmshc").glob("*.py")]
    assert len(root) <= 8, sorted(root)


def test_no_import_climbs_to_a_higher_layer():
    """Zero arrows run back up: every import, module-level or inside a function, goes to the
    importer's layer or a lower one."""
    up = sorted(f"{m} -> {n}" for m, edges in import_graph().items() for n in edges if layer(n) > layer(m))
    assert up == []


def test_the_checker_finds_an_import_that_climbs():
    assert layer("kmshc.engine.scoring") < layer("kmshc.search.run") < layer("kmshc.compare.curves")
    assert layer("kmshc.types") == 0 and layer("kmshc") == len(LAYERS) - 1


def _imports_of(tree: ast.Module) -> dict[str, str]:
    """``{name: kmshc module it comes from}`` for a module's ``from kmshc... import name``."""
    return {a.asname or a.name: node.module for node in tree.body if isinstance(node, ast.ImportFrom)
            and (node.module or "").startswith("kmshc") for a in node.names}


def declaration_walk(module: str, cls: str) -> list[str]:
    """The files a reader opens to follow a config class: its module, then, for every name its
    base classes, field annotations and defaults use, the file that defines the name; a class is
    followed the same way, a constant's file is entered and not followed further."""
    files = {module_name(p): p for p in SRC.joinpath("kmshc").rglob("*.py")}
    entered: list[str] = []
    seen: set[tuple[str, str]] = set()

    def visit(mod: str, name: str) -> None:
        if (mod, name) in seen or mod not in files:
            return
        seen.add((mod, name))
        if mod not in entered:
            entered.append(mod)
        tree = ast.parse(files[mod].read_text(encoding="utf-8"))
        imported = _imports_of(tree)
        node = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name), None)
        if node is None:
            return
        used = [*node.bases]
        for stmt in node.body:
            if isinstance(stmt, ast.AnnAssign):
                used += [stmt.annotation, *([stmt.value] if stmt.value else [])]
        names = set()
        for expr in used:
            for sub in ast.walk(expr):
                if isinstance(sub, ast.Name):
                    names.add(sub.id)
                elif isinstance(sub, ast.Constant) and isinstance(sub.value, str) and sub.value.isidentifier():
                    names.add(sub.value)  # a quoted annotation
        local = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
        for n in sorted(names):
            if n in imported:
                visit(imported[n], n)
            elif n in local:
                visit(mod, n)

    visit(module, cls)
    return entered


def test_following_the_search_config_from_kmshc_search_stays_short():
    """From ``kmshc search``: cli.py registers entry/search.py, which parses :class:`SearchConfig`;
    the walk then follows the config's declarations. Files entered count each file once; a climb
    is a step of the walk into a higher layer than the file it left."""
    walk = ["kmshc.cli", "kmshc.entry.search", *declaration_walk("kmshc.search.config", "SearchConfig")]
    climbs = sum(layer(b) > layer(a) for a, b in zip(walk, walk[1:]))
    assert len(walk) <= 16 and climbs <= 8, (len(walk), climbs, walk)


def test_files_and_functions_stay_short():
    """No file of src/kmshc over 300 lines, no function over 60."""
    long = []
    for path in SRC.joinpath("kmshc").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > 300:
            long.append(f"{path.relative_to(SRC)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert long == []
