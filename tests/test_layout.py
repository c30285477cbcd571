"""The library's shape: grouped by stage, at most a handful of modules at the top, and no import
cycle, counting the imports inside functions (a lazy import that dodges a cycle is still one)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "alpagasus"
STAGES = {"core", "data", "judging", "selection", "training", "evaluation", "reporting", "testing"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in SRC.rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every alpagasus module ``name`` imports, anywhere in the file (importing a.b.c counts
    a.b and a.b.c: Python runs a/b/__init__ first)."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join([*base, *([node.module] if node.module else [])])
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        for t in targets:
            if not t.startswith("alpagasus"):
                continue
            parts = t.split(".")
            for n in range(1, len(parts) + 1):
                head = ".".join(parts[:n])
                if head in known and head != name:
                    out.add(head)
    return out


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (c := visit(n)):
            return c
    return None


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    graph = {}
    for name, path in mods.items():
        deps = imports_of(name, path, known)
        # A package's own __init__ runs before its submodules (it may import them): a child's
        # import of its parent package is not an edge back.
        graph[name] = {d for d in deps if not name.startswith(d + ".")}
    return graph


def test_at_most_six_modules_at_the_top():
    top = sorted(p.name for p in SRC.glob("*.py"))
    assert len(top) <= 6, top


def test_every_package_at_the_top_is_a_stage():
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == STAGES


def test_no_import_cycle():
    assert find_cycle(import_graph()) is None, " -> ".join(find_cycle(import_graph()))


def test_the_cycle_finder_finds_a_planted_cycle(tmp_path):
    graph = import_graph()
    graph["alpagasus.core.io"] = graph["alpagasus.core.io"] | {"alpagasus.judging.engine"}
    cycle = find_cycle(graph)
    assert cycle and "alpagasus.core.io" in cycle and "alpagasus.judging.engine" in cycle


def test_a_lazy_import_counts(tmp_path):
    pkg = tmp_path / "alpagasus"
    (pkg / "a").mkdir(parents=True)
    (pkg / "a" / "x.py").write_text("def f():\n    from alpagasus.a import y\n")
    deps = imports_of("alpagasus.a.x", pkg / "a" / "x.py", {"alpagasus.a", "alpagasus.a.x", "alpagasus.a.y"})
    assert deps == {"alpagasus.a", "alpagasus.a.y"}
