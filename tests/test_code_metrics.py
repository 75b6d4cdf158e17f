"""The size bounds of the package (`scripts/code_metrics.py`), checked on the tree."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def load_metrics() -> ModuleType:
    spec = importlib.util.spec_from_file_location("code_metrics", ROOT / "scripts/code_metrics.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("code_metrics", module)
    spec.loader.exec_module(module)
    return module


def test_modules_and_functions_stay_short() -> None:
    metrics = load_metrics().measure(ROOT / "orchard")
    assert metrics["modules_over_600"] == {}
    orchestration = [m for m in metrics["modules_over_400"] if "orchestration/" in m]
    assert orchestration == [], orchestration
    assert metrics["functions_over_60"] == []
    assert metrics["median_function_length"] <= 10
    assert metrics["p90_function_length"] <= 30


def test_function_length_counts_from_def_to_end(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "m.py").write_text(
        "@decorator\ndef f():\n    x = 1\n\n    return x\n\n\n"
        "class C:\n    def g(self):\n        pass\n"
    )
    metrics = load_metrics().measure(package)
    assert metrics["functions"] == 2
    assert metrics["median_function_length"] == 3  # (4 + 2) / 2
    assert metrics["p90_function_length"] == 4
    assert metrics["modules_over_400"] == {}
