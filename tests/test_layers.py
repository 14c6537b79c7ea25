"""labsupport's imports keep its layers and have no cycles.

Layers: a module imports only its own layer or a lower one. The engine (``runtime``,
``broker``) never imports the notebook kit, a lesson or the course tooling; the kit never
imports a lesson; a lesson never imports the exercises or the course tooling. No module
imports another module's private (underscore) name.

No cycles: a module never needs, even lazily inside a function, a module that needs it back.
(Imports under ``if TYPE_CHECKING:`` are for type hints only and do not count.) A cycle means
two concepts are tangled: split or move one of them."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "labsupport"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def type_checking_nodes(tree: ast.AST) -> set[int]:
    return {id(sub) for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for sub in ast.walk(node)}


def imported(name: str, node: ast.ImportFrom | ast.Import, package: bool) -> set[str]:
    """The labsupport modules one import statement of module ``name`` needs."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in MODULES}
    if node.level:
        base = name.split(".") if package else name.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    found = {f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target
             for a in node.names}
    return {m for m in found if m in MODULES and m != name}


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = type_checking_nodes(tree)
        graph[name] = {dep for node in ast.walk(tree)
                       if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in skip
                       for dep in imported(name, node, path.name == "__init__.py")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


LAYERS = {"runtime": 0, "broker": 0, "kit": 1, "lessons": 2, "exercises": 3, "course": 3}
"""The rank of each layer: a module may import its own rank or a lower one."""
TOP = 4   # labsupport/__init__.py and __main__.py: the package's front door and its commands


def rank(module: str) -> int:
    parts = module.split(".")
    return LAYERS[parts[1]] if len(parts) > 2 or parts[-1] in LAYERS else TOP


def layer_breaches(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a higher layer, as "importer -> imported"."""
    return sorted(f"{a} -> {b}" for a, deps in graph.items() for b in deps if rank(b) > rank(a))


def private_imports() -> list[str]:
    """Every ``from labsupport.x import _name`` of another module's private name."""
    found = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("labsupport"):
                found += [f"{name} imports {node.module}.{a.name}" for a in node.names
                          if a.name.startswith("_") and a.name != "__version__"]
    return found


def test_every_module_sits_in_a_layer():
    flat = [name for name in MODULES if name.count(".") == 1
            and name.split(".")[1] not in LAYERS and name != "labsupport.__main__"]
    assert flat == [], f"put these in a layer folder: {flat}"


def test_no_module_imports_a_higher_layer():
    graph = import_graph()
    assert "labsupport.runtime.lab" in graph and "labsupport.kit.claims" in graph
    assert layer_breaches(graph) == []


def test_the_layer_check_finds_a_breach():
    graph = {"labsupport.runtime.load": {"labsupport.kit.claims"},
             "labsupport.kit.claims": {"labsupport.lessons.m01_blocking_calls.blocking"},
             "labsupport.lessons.m01_blocking_calls.blocking": {"labsupport.runtime.lab"},
             "labsupport.course.doctor": {"labsupport.broker.kind"}}
    assert layer_breaches(graph) == [
        "labsupport.kit.claims -> labsupport.lessons.m01_blocking_calls.blocking",
        "labsupport.runtime.load -> labsupport.kit.claims"]


def test_no_module_imports_a_private_name_of_another():
    assert private_imports() == []


def test_labsupport_has_no_import_cycles():
    graph = import_graph()
    assert {"labsupport.course.checks", "labsupport.lessons.m08_sagas.sagas", "labsupport.exercises.m01"} <= set(graph)
    assert "labsupport.course.progress" in graph["labsupport.course.checks"]  # the graph sees real imports
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_lazy_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
