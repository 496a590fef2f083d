"""No module in compressor/ imports a module that imports it back (issue 21).

The graph is read from the source with `ast`, not by importing anything. What counts as an edge:
- every `import x` / `from x import y` that runs: at module level *and inside functions*. A function-level
  import only hides a circle until the function runs (it was how the old circles were kept alive), so it counts.
- `from package import name` counts as an edge to `package.name` when that is a module, else to `package`.
- imports under `if TYPE_CHECKING:` do not count: they never run; they only name types for annotations
  (e.g. hardware.py annotates its arguments with `Plan`, which plan.py builds by calling hardware).
- importing `a.b.c` runs `a/__init__.py` and `a/b/__init__.py` too; those implicit package imports are not edges
  (a package's `__init__` re-exporting its children is how packages are meant to work).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Circles allowed for now, each with its reason. Keep this empty where possible.
ALLOWED: dict[frozenset[str], str] = {}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement in the tree that can run (all but those under `if TYPE_CHECKING:`)."""
    found: list[ast.Import | ast.ImportFrom] = []

    def walk(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                walk(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            walk(child)

    walk(tree)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """module name -> the package's modules it imports (dotted names, packages by their own name)."""
    modules: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [owner(alias.name) for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else owner(base)
                    for alias in node.names
                ]
            graph[name] |= {t for t in targets if t is not None and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted, as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def _describe(component: list[str], graph: dict[str, set[str]]) -> str:
    members = set(component)
    edges = "; ".join(f"{m} -> {', '.join(sorted(graph[m] & members))}" for m in component)
    return f"{' <-> '.join(component)} ({edges})"


def test_compressor_has_no_import_cycle():
    graph = import_graph(REPO / "compressor")
    assert "compressor.plan" in graph and "compressor.hardware" in graph["compressor.plan"]
    bad = [c for c in cycles(graph) if frozenset(c) not in ALLOWED]
    assert not bad, "import cycles:\n" + "\n".join(_describe(c, graph) for c in bad)
    stale = [sorted(k) for k in ALLOWED if sorted(k) not in cycles(graph)]
    assert not stale, f"allowed cycles that no longer exist (remove them from ALLOWED): {stale}"


def test_the_check_finds_a_planted_cycle(tmp_path):
    """Positive control: a circle hidden in a function, and one through `from package import module`."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg import b\n")
    (pkg / "b.py").write_text("def f():\n    from pkg.sub import c\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("from .. import a\n")
    (pkg / "d.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import e\nimport pkg.a\n"
    )
    (pkg / "e.py").write_text("import pkg.d\n")
    graph = import_graph(pkg)
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c"]]  # d <-> e only under TYPE_CHECKING
    assert "pkg.a -> pkg.b" in _describe(cycles(graph)[0], graph)


def test_errors_needs_nothing_above_it():
    """errors.py is imported by nearly every module: it imports none of the package (callers pass the model)."""
    assert import_graph(REPO / "compressor")["compressor.errors"] == set()
