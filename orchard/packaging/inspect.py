"""Loading a package's model class to collect its method signatures.

Two uses, one code path:

- before an upload, in the uploader's own Python: modules that are not installed there are
  replaced by stubs (the model's real dependencies live in its environment), so a package can
  be checked without installing its requirements;
- after a build, inside the built environment (``python -m orchard.packaging.inspect DIR``):
  nothing is stubbed, so an import the requirements do not satisfy fails the build with a
  message naming the module.

A model written against the official ``clarifai`` ModelClass, or any of its subclasses
(``VisualClassifierClass``, ``OpenAIModelClass`` ...), is recognised; its signatures are those
its own uploader computed, so here it is only imported. The model class is the one class of
``model.py`` that subclasses either ModelClass and that no other such class there extends.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import json
import sys
import types
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from orchard import errors
from orchard.packaging import MODEL_FILE

OFFICIAL_PACKAGE = "clarifai"
OFFICIAL_PREFIX = OFFICIAL_PACKAGE + "."


class _Stub:
    """Stands for anything a stubbed module holds: attribute, call, subscript, base class."""

    def __getattr__(self, name: str) -> _Stub:
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> _Stub:
        return self

    def __getitem__(self, key: Any) -> _Stub:
        return self

    def __mro_entries__(self, bases: tuple[Any, ...]) -> tuple[type, ...]:
        return (object,)


class _StubModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Stub()


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Last on ``sys.meta_path``: answers only for modules nothing else can import."""

    def find_spec(
        self, name: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        # Never stubbed: Orchard itself, and the official SDK, so that a model.py which falls
        # back to Orchard's ModelClass on ImportError takes that path here as in its env.
        if name.split(".")[0] in ("orchard", OFFICIAL_PACKAGE):
            return None
        return importlib.machinery.ModuleSpec(name, self, is_package=True)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = _StubModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        return None


class OfficialSdkMissing(Exception):
    """model.py builds on the official SDK, which is not installed where it is checked."""


def _is_official(cls: type) -> bool:
    return any(
        base.__name__ == "ModelClass" and base.__module__.startswith(OFFICIAL_PREFIX)
        for base in cls.__mro__
    )


def _model_classes(module: types.ModuleType) -> list[type]:
    """The module's own model classes that none of the others extends (a base class it
    defines for them is not a candidate)."""
    from orchard.runners.models.model_class import ModelClass

    found = []
    for value in vars(module).values():
        if (
            isinstance(value, type)
            and value.__module__ == module.__name__
            and (issubclass(value, ModelClass) or _is_official(value))
        ):
            found.append(value)
    return [c for c in found if not any(o is not c and issubclass(o, c) for o in found)]


def load_model_class(package_dir: Path, *, stub_missing: bool) -> type:
    """The one ModelClass subclass in ``1/model.py``; ModelInvalid explains any problem."""
    path = package_dir / MODEL_FILE
    finder = _StubFinder() if stub_missing else None
    if finder is not None:
        sys.meta_path.append(finder)
    spec = importlib.util.spec_from_file_location("orchard_user_model", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except errors.OrchardError as exc:
        raise errors.ModelInvalid(f"{path}: {exc.message}") from None
    except ModuleNotFoundError as exc:
        if finder is not None and (exc.name or "").split(".")[0] == OFFICIAL_PACKAGE:
            raise OfficialSdkMissing(path) from None
        raise errors.ModelInvalid(
            f"{path}: import of {exc.name!r} failed in the model's environment; add the "
            "package that provides it to requirements.txt"
        ) from None
    except Exception as exc:
        raise errors.ModelInvalid(
            f"{path}: loading it raised {type(exc).__name__}: {exc}"
        ) from None
    finally:
        sys.path.remove(str(path.parent))
        if finder is not None:
            sys.meta_path.remove(finder)
    classes = _model_classes(module)
    if len(classes) != 1:
        names = ", ".join(c.__name__ for c in classes) or "none"
        raise errors.ModelInvalid(f"{path}: needs exactly one ModelClass subclass (found: {names})")
    return classes[0]


def collect_signatures(package_dir: Path, *, stub_missing: bool) -> list[dict[str, Any]] | None:
    """Method signatures as dicts (the proto's JSON form), or None for a model written against
    the official SDK (whose uploader sends its own; its environment checks it)."""
    try:
        cls = load_model_class(package_dir, stub_missing=stub_missing)
    except OfficialSdkMissing:
        return None
    if _is_official(cls):
        return None
    from orchard.runners.models.model_class import signatures

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
