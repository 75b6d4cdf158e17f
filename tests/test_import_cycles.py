"""No import cycle between the top-level parts of ``orchard/`` (its folders and modules).

Imports are read with ``ast`` (every ``import`` and ``from ... import``, in functions too), so
a cycle shows here before it shows as an import error or as two parts that can only change
together.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "orchard"

# Imports still to move, with where they go: the replica's command line reads the package's
# config name and loads its class through orchard.packaging (the new homes are
# orchard.runners.models.loading's MODEL_FILE and load_model_class); it is being rewritten
# with the command line split.
PENDING: set[tuple[str, str]] = set()

Edges = dict[str, dict[str, list[str]]]


def part_of(relative: Path) -> str:
    """The top-level part a file belongs to: its folder under orchard/, or its module name."""
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imported_modules(node: ast.AST, package: list[str]) -> list[str]:
    """The absolute module names one import statement names (``from orchard import x`` names
    ``orchard.x``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = package[: len(package) - node.level + 1]
        module = ".".join([*base, node.module] if node.module else base)
    else:
        module = node.module or ""
    if module == "orchard":
        return [f"orchard.{alias.name}" for alias in node.names]
    return [module]


def import_edges(root: Path) -> Edges:
    """part → imported part → the ``file:line`` of each such import."""
    edges: Edges = defaultdict(lambda: defaultdict(list))
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        source = part_of(relative)
        package = [root.name, *relative.parts[:-1]]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            for module in imported_modules(node, package):
                names = module.split(".")
                if names[0] != root.name or len(names) < 2 or names[1] == source:
                    continue
                if (relative.as_posix(), names[1]) not in PENDING:
                    edges[source][names[1]].append(f"{relative}:{node.lineno}")
    return edges


def reachable(edges: Edges, start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for target in edges.get(todo.pop(), {}):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def cycles(edges: Edges) -> list[str]:
    """Each pair of parts that reach each other, with the imports that lead one to the other."""
    reach = {part: reachable(edges, part) for part in list(edges)}
    found = []
    for a in sorted(reach):
        for b in sorted(reach[a]):
            if a < b and a in reach.get(b, set()):
                found.append(
                    f"{a} <-> {b}: {a} imports {dict(edges[a])}; {b} imports {dict(edges[b])}"
                )
    return found


def test_no_import_cycle_between_top_level_parts() -> None:
    assert cycles(import_edges(PACKAGE)) == []


def test_a_cycle_is_found(tmp_path: Path) -> None:
    root = tmp_path / "orchard"
    for name, text in {
        "a/__init__.py": "",
        "a/x.py": "from orchard.b import y\n",
        "b/__init__.py": "",
        "b/y.py": "def f():\n    from ..c import z\n",
        "c.py": "from orchard import a\n",
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    edges = import_edges(root)
    assert edges["b"]["c"] == ["b/y.py:2"]
    assert len(cycles(edges)) == 3  # a-b, a-c, b-c: one cycle through all three
