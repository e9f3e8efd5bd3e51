"""The package's layering: no import knots between modules or between subpackages.

Imports are read from the source (module level and inside functions alike), so a lazy
import inside a function counts too. A module may import its own package's ``__init__``
siblings freely, but two modules (or two subpackages / top-level modules of ``hogwild``)
never import each other, directly or through a chain.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "hogwild"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports() -> dict[str, set[str]]:
    """module -> the hogwild modules it imports (resolved to existing modules)."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_pkg = path.name == "__init__.py"
        base = name.split(".") if is_pkg else name.split(".")[:-1]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    anchor = base[: len(base) - (node.level - 1)]
                    mod = ".".join(anchor + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
            for t in targets:
                while t and t not in files:
                    t = t.rpartition(".")[0]
                if t.startswith("hogwild") and t != name:
                    found.add(t)
        graph[name] = found
    return graph


def _unit(module: str) -> str:
    """The layer a module belongs to: ``hogwild.X`` for a top-level module or subpackage."""
    parts = module.split(".")
    return ".".join(parts[:2])


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def test_no_module_imports_a_module_that_imports_it_back():
    graph = _imports()
    # a package's __init__ re-exporting its own modules is not a knot: skip the edges from
    # a package to the modules inside it
    pruned = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph.items()}
    assert _cycles(pruned) == []


def test_subpackages_form_layers():
    graph = _imports()
    units: dict[str, set[str]] = {}
    for module, targets in graph.items():
        if module == "hogwild":
            continue
        src = _unit(module)
        units.setdefault(src, set()).update(_unit(t) for t in targets if _unit(t) not in (src, "hogwild"))
    assert _cycles(units) == []


def test_models_are_plain_pytorch():
    graph = _imports()
    for module, targets in graph.items():
        if module.startswith("hogwild.models"):
            bad = [t for t in targets if _unit(t) in ("hogwild.kernels", "hogwild.core")]
            assert not bad, f"{module} imports {bad}"


def test_the_checker_sees_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
