"""Loading a model package's model class from its ``1/model.py``.

The model runtime's half of a package: a replica loads its class here before serving, and
``orchard.packaging.inspect`` loads it to collect its signatures. ``stub_missing`` replaces
modules that are not installed by stubs (a package checked in the uploader's own Python, whose
environment lacks the model's requirements); without it an import the requirements do not
satisfy is a ModelInvalid naming the module.

A model written against the official ``clarifai`` ModelClass, or any of its subclasses
(``VisualClassifierClass``, ``OpenAIModelClass`` ...), is recognised (:func:`is_official`). The
model class is the one class of ``model.py`` that subclasses either ModelClass and that no other
such class there extends.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

from orchard import errors

MODEL_FILE = "1/model.py"

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


def is_official(cls: type) -> bool:
    """Whether ``cls`` subclasses the official SDK's ModelClass."""
    return any(
        base.__name__ == "ModelClass" and base.__module__.startswith(OFFICIAL_PREFIX)
        for base in cls.__mro__
    )


def _model_classes(module: types.ModuleType) -> list[type]:
    """The module's own model classes that none of the others extends (a base class it
    defines for them is not a candidate)."""
    from orchard.runners.models.model_class import ModelClass  # only when a model is loaded

    found = []
    for value in vars(module).values():
        if (
            isinstance(value, type)
            and value.__module__ == module.__name__
            and (issubclass(value, ModelClass) or is_official(value))
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
