"""From Python annotations to ``ModelTypeField`` protos, the way the official SDK stores them.

Conventions (verified against ``clarifai/runners/utils/method_signatures.py`` and
``data_utils.py`` of clarifai 12.5.0):

- a parameter's field has ``name`` = the parameter name; ``required`` = it has no default; the
  return value's field is named ``return`` and never sets ``required``.
- a default is stored in ``default`` as text: a ``str`` as itself, anything else as JSON
  (``None`` → ``"null"``), and ``str(value)`` when JSON cannot hold it.
- ``Param(...)`` adds ``description``, ``model_type_enum_options`` (``id`` = ``str(choice)``),
  ``model_type_range_info{min, max}`` and ``is_param = true``.
- ``List[T]`` is ``LIST`` with one ``type_args`` entry named ``<name>_item``; ``Tuple[A, B]`` is
  ``TUPLE`` with one entry per element, each named ``<name>_item``; ``NamedFields(a=T)`` is
  ``NAMED_FIELDS`` with one entry per field, named after the field.
- ``Iterator[T]`` (also ``Iterable``, ``Generator`` and their async forms) sets
  ``iterator = true`` on the field of ``T``; it is allowed only as a whole annotation.
- bare ``list``/``dict``, ``dict[...]`` and ``JSON`` are ``JSON_DATA``; ``PIL.Image.Image`` is
  ``IMAGE``; ``numpy.ndarray`` is ``NDARRAY``.

Orchard accepts two things the official SDK rejects, with the same wire form: ``dict[str, Any]``
(JSON) and ``Optional[T]`` / ``T | None`` on a parameter (the field of ``T``).
"""

from __future__ import annotations

import collections.abc as cabc
import inspect
import json
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from clarifai_grpc.grpc.api import resources_pb2

from orchard.codec import data_types as dt

Field: TypeAlias = resources_pb2.ModelTypeField
DataType = resources_pb2.ModelTypeField.DataType
Cast = Callable[[Any], Any]
EMPTY = inspect.Parameter.empty
RETURN = "return"

STREAM_ORIGINS = (
    cabc.Iterator,
    cabc.Iterable,
    cabc.Generator,
    cabc.AsyncIterator,
    cabc.AsyncIterable,
    cabc.AsyncGenerator,
)
SUPPORTED = (
    "str, bytes, int, float, bool, dict/JSON, List[T], Tuple[A, B], NamedFields(a=T), "
    "numpy.ndarray, PIL.Image.Image, Text, Image, Audio, Video, Concept, Region, Frame"
)

_SIMPLE: dict[Any, int] = {
    str: DataType.STR,
    bytes: DataType.BYTES,
    int: DataType.INT,
    float: DataType.FLOAT,
    bool: DataType.BOOL,
    dict: DataType.JSON_DATA,
    list: DataType.JSON_DATA,
    dt.JSON: DataType.JSON_DATA,
    dt.Text: DataType.TEXT,
    dt.Image: DataType.IMAGE,
    dt.Concept: DataType.CONCEPT,
    dt.Region: DataType.REGION,
    dt.Frame: DataType.FRAME,
    dt.Audio: DataType.AUDIO,
    dt.Video: DataType.VIDEO,
}
_RESERVED_FIELD_NAMES = frozenset(dir(dt.NamedFields))


class UnsupportedType(TypeError):
    """An annotation with no wire form; the message says what to write instead."""


@dataclass(frozen=True)
class Param:
    """A parameter's default plus what clients are told about it (and what is enforced).

    ``def predict(self, prompt: str, temperature: float = Param(0.7, "sampling temperature",
    min_value=0.0, max_value=2.0)) -> str``. ``@ModelClass.method`` replaces the ``Param``
    default by ``default`` itself, so a direct Python call gets the plain value.
    """

    default: Any
    description: str | None = None
    min_value: float | None = None
    max_value: float | None = None
    choices: Sequence[Any] | None = None
    is_param: bool = True

    def problem(self, value: Any) -> str | None:
        """Why ``value`` breaks this parameter's range or choices, or None."""
        if self.choices is not None and value not in self.choices:
            return f"{value!r} is not one of the choices {list(self.choices)!r}"
        if self.min_value is not None and value < self.min_value:
            return f"{value!r} is below min_value {self.min_value!r}"
        if self.max_value is not None and value > self.max_value:
            return f"{value!r} is above max_value {self.max_value!r}"
        return None

    def fill(self, field: Field) -> None:
        if self.description is not None:
            field.description = self.description
        for choice in self.choices or ():
            field.model_type_enum_options.add(id=str(choice))
        if self.min_value is not None:
            field.model_type_range_info.min = float(self.min_value)
        if self.max_value is not None:
            field.model_type_range_info.max = float(self.max_value)
        field.is_param = self.is_param


def encode_default(value: Any) -> str:
    """The text form of a default, as ``ModelTypeField.default`` holds it."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return str(value)


def split_stream(annotation: Any) -> tuple[Any, bool]:
    """``(T, True)`` for ``Iterator[T]`` and the like, else ``(annotation, False)``."""
    if typing.get_origin(annotation) in STREAM_ORIGINS:
        args = typing.get_args(annotation)
        return (args[0] if args else EMPTY), True
    if annotation in STREAM_ORIGINS:
        return EMPTY, True
    return annotation, False


def strip_optional(annotation: Any) -> Any:
    """``T`` for ``Optional[T]`` / ``T | None``; anything else unchanged."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def build_field(
    name: str, annotation: Any, default: Any = EMPTY, param: Param | None = None
) -> tuple[Field, Cast | None, bool]:
    """The field of one parameter (or of the return value when ``name == "return"``).

    Returns the field, the cast that turns a decoded wire value into the annotated Python type
    (None when they are the same) and whether the annotation is a stream. Raises
    :class:`UnsupportedType`.
    """
    item, streaming = split_stream(annotation)
    if item is EMPTY:
        raise UnsupportedType("a stream needs an item type, e.g. Iterator[str]")
    field = Field(name=name, iterator=streaming)
    if name != RETURN:
        item = strip_optional(item)
        field.required = default is EMPTY
        if not field.required:
            if param is not None:
                param.fill(field)
            field.default = encode_default(default)
    cast = fill_type(field, item)
    return field, cast, streaming


def fill_type(field: Field, tp: Any) -> Cast | None:
    """Set ``field.type`` (and ``type_args``) for the annotation ``tp``; return its cast."""
    simple = _simple_type(tp)
    if simple is not None:
        field.type = simple
        return _to_pil if _is_pil_class(tp) else None
    origin = typing.get_origin(tp)
    if origin is list:
        return _fill_list(field, tp)
    if origin is tuple:
        return _fill_tuple(field, tp)
    if origin is dict:
        field.type = DataType.JSON_DATA
        return None
    if named_fields_spec(tp) is not None:
        return _fill_named_fields(field, tp)
    raise UnsupportedType(_unsupported(tp))


def _simple_type(tp: Any) -> int | None:
    if _is_pil_class(tp):
        return DataType.IMAGE
    if _is_ndarray_class(tp):
        return DataType.NDARRAY
    try:
        return _SIMPLE.get(tp)
    except TypeError:  # unhashable, e.g. a NamedFields(...) annotation
        return None


def _fill_list(field: Field, tp: Any) -> Cast | None:
    args = typing.get_args(tp)
    if not args:
        field.type = DataType.JSON_DATA
        return None
    field.type = DataType.LIST
    inner = field.type_args.add(name=f"{field.name}_item")
    cast = fill_type(inner, args[0])
    return None if cast is None else lambda values: [cast(v) for v in values]


def _fill_tuple(field: Field, tp: Any) -> Cast | None:
    args = typing.get_args(tp)
    if not args or Ellipsis in args or args == ((),):
        raise UnsupportedType(
            f"{_type_name(tp)} has no fixed length; name each element type, e.g. "
            "Tuple[str, int], or use List[T] for any length"
        )
    field.type = DataType.TUPLE
    casts = [fill_type(field.type_args.add(name=f"{field.name}_item"), a) for a in args]
    if all(c is None for c in casts):
        return None
    return lambda values: tuple(c(v) if c else v for c, v in zip(casts, values, strict=True))


def _fill_named_fields(field: Field, tp: Any) -> Cast | None:
    spec = named_fields_spec(tp) or {}
    field.type = DataType.NAMED_FIELDS
    casts: dict[str, Cast | None] = {}
    for key, inner_tp in spec.items():
        if key.startswith("_") or key in _RESERVED_FIELD_NAMES:
            raise UnsupportedType(f"NamedFields field name {key!r} is reserved; rename it")
        casts[key] = fill_type(field.type_args.add(name=key), inner_tp)
    cls = tp if isinstance(tp, type) else dt.NamedFields
    if cls is dt.NamedFields and all(c is None for c in casts.values()):
        return None

    def cast(value: dt.NamedFields) -> dt.NamedFields:
        return cls(**{k: (casts[k] or _same)(v) for k, v in vars(value).items()})

    return cast


def named_fields_spec(tp: Any) -> dict[str, Any] | None:
    """The field types of a NamedFields annotation (instance or annotated subclass), or None."""
    if isinstance(tp, dt.NamedFields):
        return dict(vars(tp))
    if isinstance(tp, type) and issubclass(tp, dt.NamedFields) and tp is not dt.NamedFields:
        return typing.get_type_hints(tp)
    if tp is dt.NamedFields:
        raise UnsupportedType(
            "NamedFields needs its fields, e.g. NamedFields(text=str, score=float)"
        )
    return None


def _same(value: Any) -> Any:
    return value


def _to_pil(value: dt.Image | None) -> Any:
    return None if value is None else value.to_pil()


def _is_pil_class(tp: Any) -> bool:
    return isinstance(tp, type) and any(
        c.__module__ == "PIL.Image" and c.__name__ == "Image" for c in tp.__mro__
    )


def _is_ndarray_class(tp: Any) -> bool:
    tp = typing.get_origin(tp) or tp
    return isinstance(tp, type) and tp.__module__ == "numpy" and tp.__name__ == "ndarray"


def _type_name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else repr(tp)


def _unsupported(tp: Any) -> str:
    if typing.get_origin(tp) in STREAM_ORIGINS or tp in STREAM_ORIGINS:
        return (
            f"{_type_name(tp)} is nested; Iterator[...] may only be the whole annotation of "
            "one parameter and of the return value"
        )
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return (
            f"{_type_name(tp)} is a union; use one type (Optional[T] is allowed only for a "
            "parameter)"
        )
    if tp is Any:
        return f"typing.Any has no wire form; use one of: {SUPPORTED}"
    return f"{_type_name(tp)} is not a supported type; use one of: {SUPPORTED}"
