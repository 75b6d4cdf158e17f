"""Every module path that docs/ARCHITECTURE.md names exists (so the document moves with code).

Checked: file paths in backticks (``orchard/server/rpc.py``, ``server/work.py::LinkServer``, a
bare ``rpc.py`` that must be somewhere under ``orchard/``), folders (``orchard/dispatch/``),
and dotted module names (``orchard.runners.serve``). A ``::name`` must be defined in its file.
Left out: the glossary's "to rename" list (names still to come) and paths inside a model
package (``1/model.py``).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "ARCHITECTURE.md"
CODE = re.compile(r"`([^`\s]+)`")
FILE = re.compile(r"^([\w./-]+\.py)(?:::([\w.]+))?$")
FOLDER = re.compile(r"^((?:orchard|examples|benchmarks|tests|scripts|docs)/[\w./-]*)/$")
MODULE = re.compile(r"^orchard(\.\w+)+$")
NOT_MODULES = {"orchard.deployment"}  # a runner's metadata key


def named() -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    text = re.sub(r"\nTo rename.*?\n## ", "\n## ", text, flags=re.DOTALL)
    return [name for name in CODE.findall(text) if not name.startswith("1/")]


def find_file(path: str) -> Path | None:
    """The file a path names: from the repository root, from ``orchard/``, or (a bare name)
    anywhere under ``orchard/``."""
    for base in (ROOT, ROOT / "orchard"):
        if (base / path).is_file():
            return base / path
    if "/" not in path:
        return next((ROOT / "orchard").rglob(path), None)
    return None


def defines(path: Path, name: str) -> bool:
    """Whether ``name`` (``Class.method`` too) is a function, class or assignment in ``path``."""
    wanted = name.split(".")[-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if node.name == wanted:
                return True
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == wanted for t in targets):
                return True
    return False


def module_exists(dotted: str) -> bool:
    """Whether a dotted name starts with a module of the package (``orchard.a.b`` or
    ``orchard.a.b.attribute``)."""
    parts = dotted.split(".")
    for end in range(len(parts), 1, -1):
        base = ROOT.joinpath(*parts[:end])
        if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
            return True
    return False


def missing() -> list[str]:
    problems = []
    for text in named():
        if match := FILE.match(text):
            path = find_file(match[1])
            if path is None:
                problems.append(f"{text}: no such file")
            elif match[2] and not defines(path, match[2]):
                problems.append(f"{text}: {match[2]} is not defined in {path.relative_to(ROOT)}")
        elif match := FOLDER.match(text):
            if not (ROOT / match[1]).is_dir():
                problems.append(f"{text}: no such folder")
        elif MODULE.match(text) and text not in NOT_MODULES and not module_exists(text):
            problems.append(f"{text}: no such module")
    return problems


def test_the_document_names_paths() -> None:
    assert sum(1 for text in named() if FILE.match(text)) > 50


def test_every_path_the_architecture_document_names_exists() -> None:
    assert missing() == []
