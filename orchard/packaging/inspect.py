"""Loading a package's model class to collect its method signatures.

Two uses, one code path:

- before an upload, in the uploader's own Python: modules that are not installed there are
  replaced by stubs (the model's real dependencies live in its environment), so a package can
  be checked without installing its requirements;
- after a build, inside the built environment (``python -m orchard.packaging.inspect DIR``):
  nothing is stubbed, so an import the requirements do not satisfy fails the build with a
  message naming the module.

Loading the class is the model runtime's (``orchard.runners.models.loading``, re-exported
here). A model written against the official ``clarifai`` ModelClass has the signatures its own
uploader computed, so here it is only imported.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from orchard import errors
from orchard.packaging import MODEL_FILE
from orchard.runners.models.loading import OfficialSdkMissing, is_official, load_model_class

__all__ = ["OfficialSdkMissing", "collect_signatures", "load_model_class", "run_inspection"]


def collect_signatures(package_dir: Path, *, stub_missing: bool) -> list[dict[str, Any]] | None:
    """Method signatures as dicts (the proto's JSON form), or None for a model written against
    the official SDK (whose uploader sends its own; its environment checks it)."""
    try:
        cls = load_model_class(package_dir, stub_missing=stub_missing)
    except OfficialSdkMissing:
        return None
    if is_official(cls):
        return None
    from orchard.runners.models.model_class import signatures  # only when a model is loaded

    try:
        protos = signatures(cls)
    except errors.OrchardError as exc:
        raise errors.ModelInvalid(f"{package_dir / MODEL_FILE}: {exc.message}") from None
    return [json_format.MessageToDict(p, preserving_proto_field_name=True) for p in protos]


def main(argv: list[str]) -> int:
    """``python -m orchard.packaging.inspect DIR [--stub-missing]``: one JSON line on stdout,
    ``{"signatures": [...] | null}`` or ``{"error": "..."}``."""
    package_dir = Path(argv[0])
    try:
        result: dict[str, Any] = {
            "signatures": collect_signatures(package_dir, stub_missing="--stub-missing" in argv)
        }
    except errors.OrchardError as exc:
        result = {"error": exc.message}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


def run_inspection(
    python: str, package_dir: Path, *, stub_missing: bool, timeout: float = 300
) -> list[dict[str, Any]] | None:
    """``collect_signatures`` in a fresh interpreter (``python``), so the model's imports
    neither pollute nor depend on the caller's process."""
    import subprocess

    command = [python, "-m", "orchard.packaging.inspect", str(package_dir)]
    if stub_missing:
        command.append("--stub-missing")
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise errors.ModelInvalid(
            f"{package_dir / MODEL_FILE}: checking it failed: "
            f"{(done.stderr or done.stdout).strip()[-2000:]}"
        )
    result = json.loads(lines[-1])
    if "error" in result:
        raise errors.ModelInvalid(result["error"])
    signatures: list[dict[str, Any]] | None = result["signatures"]
    return signatures
