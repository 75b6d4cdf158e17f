"""Size metrics of the `orchard/` package: long modules, long functions, and the spread.

How it measures:

- A module's length is its number of physical lines (as `wc -l` counts them).
- A function's length is counted with `ast`: from the line of its `def` (or `async def`;
  decorators are not counted) to its last line (`end_lineno`), both included, so docstrings,
  comments and blank lines inside the body count. Every function counts, methods and nested
  functions too; a nested function's lines count in its own length and in its parent's.
- The median and p90 are over all the functions of the package (p90 by the nearest-rank
  method: the smallest length that at least 90% of the functions do not exceed).

Run it as `python scripts/code_metrics.py [ROOT]` (ROOT defaults to the `orchard/` folder
next to this script): it prints a JSON object, then a short table. `measure(root)` returns the
same object for tests.
"""

from __future__ import annotations

import ast
import json
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODULE_WARN = 400
MODULE_MAX = 600
FUNCTION_MAX = 60


@dataclass(frozen=True)
class Function:
    """One function: where it is and how many lines it spans."""

    path: str
    name: str
    line: int
    length: int


def function_lengths(path: Path, shown: str) -> list[Function]:
    """Every function in one file, methods and nested functions included."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[Function] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            end = node.end_lineno or node.lineno
            found.append(Function(shown, node.name, node.lineno, end - node.lineno + 1))
    return found


def percentile(values: list[int], fraction: float) -> int:
    """The nearest-rank percentile of `values` (which must not be empty)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def measure(root: Path, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The metrics of every `.py` file under `root`, paths shown relative to its parent.

    Files whose shown path starts with one of `skip` (`"orchard/orchestration/"`) are left out.
    """
    modules: dict[str, int] = {}
    functions: list[Function] = []
    for path in sorted(root.rglob("*.py")):
        shown = path.relative_to(root.parent).as_posix()
        if shown.startswith(skip):
            continue
        modules[shown] = len(path.read_text(encoding="utf-8").splitlines())
        functions.extend(function_lengths(path, shown))
    lengths = [f.length for f in functions] or [0]
    long_functions = sorted(
        (f for f in functions if f.length > FUNCTION_MAX), key=lambda f: -f.length
    )
    return {
        "root": root.as_posix(),
        "modules": len(modules),
        "functions": len(functions),
        "modules_over_400": {p: n for p, n in modules.items() if n > MODULE_WARN},
        "modules_over_600": {p: n for p, n in modules.items() if n > MODULE_MAX},
        "functions_over_60": [
            {"path": f.path, "name": f.name, "line": f.line, "length": f.length}
            for f in long_functions
        ],
        "median_function_length": statistics.median(lengths),
        "p90_function_length": percentile(lengths, 0.9),
    }


def table(metrics: dict[str, Any]) -> str:
    """A short human-readable summary of `measure`'s result."""
    lines = [
        f"{metrics['modules']} modules, {metrics['functions']} functions; "
        f"median {metrics['median_function_length']}, p90 {metrics['p90_function_length']}",
        f"modules over {MODULE_WARN} lines:",
    ]
    for path, n in sorted(metrics["modules_over_400"].items(), key=lambda kv: -kv[1]):
        over = " (over 600)" if n > MODULE_MAX else ""
        lines.append(f"  {n:5d}  {path}{over}")
    lines.append(f"functions over {FUNCTION_MAX} lines:")
    for f in metrics["functions_over_60"]:
        lines.append(f"  {f['length']:5d}  {f['path']}:{f['line']} {f['name']}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    default = Path(__file__).resolve().parent.parent / "orchard"
    root = Path(argv[1]) if len(argv) > 1 else default
    metrics = measure(root)
    print(json.dumps(metrics, indent=2))
    print(table(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
