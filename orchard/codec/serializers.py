"""Python values to ``resources_pb2.Data`` and back, driven by a ``ModelTypeField``.

Wire forms (those of the official SDK, ``clarifai/runners/utils/serializers.py`` and
``method_signatures.py::_DATA_TYPES``):

====================  ============================================================
STR/BYTES/INT/FLOAT   ``string_value`` / ``bytes_value`` / ``int_value`` / ``float_value``
BOOL                  ``bool_value``
NDARRAY               ``ndarray{buffer, shape, dtype}`` (``buffer`` = the C-order bytes)
JSON_DATA             ``struct_value``; a list is wrapped as ``{"_list": [...]}``
TEXT/IMAGE/AUDIO/...  ``text`` / ``image`` / ``audio`` / ``video``
CONCEPT/REGION/FRAME  one entry of ``concepts`` / ``regions`` / ``frames``
LIST                  of CONCEPT/REGION/FRAME: all entries of that repeated field; of
                      anything else: one ``parts[]`` entry per item, no id
TUPLE                 one ``parts[]`` entry per element, ``id`` = ``"0"``, ``"1"``, ...
NAMED_FIELDS          one ``parts[]`` entry per field, ``id`` = the field name
====================  ============================================================

Arguments and return values are one level up: ``Data.parts[]`` with ``id`` = the argument
name (``"return"`` for the return value), see :func:`encode_args` / :func:`decode_args`.

JSON numbers are doubles on the wire; decoding gives an ``int`` for a whole number (the
official SDK gives a ``float``), so ``{"n": 3}`` comes back as ``{"n": 3}``.
"""

from __future__ import annotations

import numbers
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

from clarifai_grpc.grpc.api import resources_pb2
from google.protobuf import struct_pb2

from orchard.codec import data_types as dt

Data: TypeAlias = resources_pb2.Data
Field: TypeAlias = resources_pb2.ModelTypeField
DataType = resources_pb2.ModelTypeField.DataType

_REPEATED = {
    DataType.CONCEPT: ("concepts", dt.Concept),
    DataType.REGION: ("regions", dt.Region),
    DataType.FRAME: ("frames", dt.Frame),
}
_MESSAGES = {
    DataType.TEXT: ("text", dt.Text),
    DataType.IMAGE: ("image", dt.Image),
    DataType.AUDIO: ("audio", dt.Audio),
    DataType.VIDEO: ("video", dt.Video),
}
_MAX_EXACT_INT = 2**53


class WireError(ValueError):
    """A value that does not fit its declared type (or wire data that does not fit it).

    ``path`` locates the value inside nested lists, tuples and named fields.
    """

    def __init__(self, problem: str, path: str = "") -> None:
        super().__init__(f"{path}: {problem}" if path else problem)
        self.problem, self.path = problem, path

    def within(self, segment: str) -> WireError:
        return WireError(self.problem, segment + self.path)


def type_name(field: Field) -> str:
    """``STR``, ``LIST[INT]``, ``NAMED_FIELDS[a: STR]``: how messages name a field's type."""
    name = DataType.Name(field.type)
    if field.type == DataType.NAMED_FIELDS:
        return f"{name}[{', '.join(f'{a.name}: {type_name(a)}' for a in field.type_args)}]"
    if field.type_args:
        return f"{name}[{', '.join(type_name(a) for a in field.type_args)}]"
    return name


# -- encode ------------------------------------------------------------------------------


def encode(field: Field, value: Any, data: Data) -> None:
    """Write ``value`` into ``data`` in the wire form of ``field``; raise :class:`WireError`."""
    kind = field.type
    if kind in _ATOMIC_ENCODERS:
        attr, convert = _ATOMIC_ENCODERS[kind]
        setattr(data, attr, convert(value))
    elif kind in _MESSAGES:
        attr, cls = _MESSAGES[kind]
        getattr(data, attr).CopyFrom(_as_message(value, cls))
        getattr(data, attr).SetInParent()
    elif kind in _REPEATED:
        attr, cls = _REPEATED[kind]
        getattr(data, attr).add().CopyFrom(_as_message(value, cls))
    elif kind in _CONTAINER_ENCODERS:
        _CONTAINER_ENCODERS[kind](field, value, data)
    else:
        raise WireError(f"fields of type {type_name(field)} cannot be encoded")


def _expect(value: Any, ok: bool, wanted: str) -> None:
    if not ok:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise WireError(f"expected {wanted}, got {type(value).__name__} {shown}")


def _as_str(value: Any) -> str:
    _expect(value, isinstance(value, str), "str")
    return str(value)


def _as_bytes(value: Any) -> bytes:
    _expect(value, isinstance(value, bytes | bytearray | memoryview), "bytes")
    return bytes(value)


def _as_int(value: Any) -> int:
    _expect(value, isinstance(value, numbers.Integral) and not _is_bool(value), "int")
    return operator.index(value)


def _as_float(value: Any) -> float:
    _expect(value, isinstance(value, numbers.Real) and not _is_bool(value), "float")
    return float(value)


def _as_bool(value: Any) -> bool:
    _expect(value, _is_bool(value), "bool")
    return bool(value)


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool) or type(value).__name__ == "bool_"


def _as_ndarray(value: Any) -> resources_pb2.NDArray:
    np = dt.require("numpy", "an ndarray value")
    array = np.asarray(value)
    _expect(value, array.dtype.kind in "biufc", "a numeric numpy array")
    return resources_pb2.NDArray(
        buffer=np.ascontiguousarray(array).tobytes(), shape=array.shape, dtype=str(array.dtype)
    )


def _as_struct(value: Any) -> struct_pb2.Struct:
    if isinstance(value, dt.JSON):
        value = value.value
    _expect(value, isinstance(value, Mapping | list | tuple), "a JSON object (dict) or list")
    struct = struct_pb2.Struct()
    try:
        struct.update({"_list": list(value)} if isinstance(value, list | tuple) else value)
    except (TypeError, ValueError) as exc:
        raise WireError(f"not JSON data ({exc}); use str keys and JSON values") from None
    return struct


def _as_message(value: Any, cls: type) -> Any:
    if isinstance(value, cls):
        return value.to_proto()  # type: ignore[attr-defined]
    if cls is dt.Image and dt.is_pil_image(value):
        return dt.Image.from_pil(value).to_proto()
    if cls in (dt.Text, dt.Concept) and isinstance(value, str):
        return cls(value).to_proto()
    wanted = cls.__name__ + (" or PIL.Image.Image" if cls is dt.Image else "")
    raise WireError(f"expected {wanted}, got {type(value).__name__}")


def _encode_list(field: Field, value: Any, data: Data) -> None:
    _expect(value, isinstance(value, list | tuple), "a list")
    inner = field.type_args[0]
    if inner.type in _REPEATED:
        attr, cls = _REPEATED[inner.type]
        for i, item in enumerate(value):
            with _at(f"[{i}]"):
                getattr(data, attr).add().CopyFrom(_as_message(item, cls))
        return
    for i, item in enumerate(value):
        with _at(f"[{i}]"):
            encode(inner, item, data.parts.add().data)


def _encode_tuple(field: Field, value: Any, data: Data) -> None:
    n = len(field.type_args)
    _expect(value, isinstance(value, tuple | list) and len(value) == n, f"a tuple of {n}")
    for i, (inner, item) in enumerate(zip(field.type_args, value, strict=True)):
        with _at(f"[{i}]"):
            encode(inner, item, data.parts.add(id=str(i)).data)


def _encode_named_fields(field: Field, value: Any, data: Data) -> None:
    if isinstance(value, dt.NamedFields):
        value = vars(value)
    _expect(value, isinstance(value, Mapping), "NamedFields(...) or a dict")
    names = [inner.name for inner in field.type_args]
    extra = sorted(set(value) - set(names))
    if extra:
        raise WireError(f"unexpected field(s) {extra}; the declared fields are {names}")
    for inner in field.type_args:
        if inner.name not in value:
            raise WireError(f"missing field {inner.name!r}; the declared fields are {names}")
        with _at(f".{inner.name}"):
            encode(inner, value[inner.name], data.parts.add(id=inner.name).data)


class _at:
    """Prefix a :class:`WireError` raised inside with a path segment."""

    def __init__(self, segment: str) -> None:
        self.segment = segment

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, WireError):
            raise exc.within(self.segment) from None


_ATOMIC_ENCODERS: dict[int, tuple[str, Callable[[Any], Any]]] = {
    DataType.STR: ("string_value", _as_str),
    DataType.BYTES: ("bytes_value", _as_bytes),
    DataType.INT: ("int_value", _as_int),
    DataType.FLOAT: ("float_value", _as_float),
    DataType.BOOL: ("bool_value", _as_bool),
}
_CONTAINER_ENCODERS: dict[int, Callable[[Field, Any, Data], None]] = {
    DataType.LIST: _encode_list,
    DataType.TUPLE: _encode_tuple,
    DataType.NAMED_FIELDS: _encode_named_fields,
    DataType.NDARRAY: lambda _f, v, d: d.ndarray.CopyFrom(_as_ndarray(v)),
    DataType.JSON_DATA: lambda _f, v, d: d.struct_value.CopyFrom(_as_struct(v)),
}


# -- decode ------------------------------------------------------------------------------


def decode(field: Field, data: Data) -> Any:
    """The Python value ``data`` holds in the wire form of ``field``; raise :class:`WireError`.

    An absent message (``text``, ``image``, ...) or JSON object decodes as None.
    """
    kind = field.type
    if kind in _ATOMIC_ENCODERS:
        return getattr(data, _ATOMIC_ENCODERS[kind][0])
    if kind in _MESSAGES:
        attr, cls = _MESSAGES[kind]
        return cls.from_proto(getattr(data, attr)) if data.HasField(attr) else None  # type: ignore[attr-defined]
    if kind in _REPEATED:
        return _decode_one(field, data)
    if kind in _CONTAINER_DECODERS:
        return _CONTAINER_DECODERS[kind](field, data)
    raise WireError(f"fields of type {type_name(field)} cannot be decoded")


def _decode_one(field: Field, data: Data) -> Any:
    attr, cls = _REPEATED[field.type]
    entries = getattr(data, attr)
    if len(entries) > 1:
        raise WireError(f"expected one entry in {attr}, got {len(entries)}; declare List[...]")
    return cls.from_proto(entries[0]) if entries else None  # type: ignore[attr-defined]


def _decode_ndarray(_field: Field, data: Data) -> Any:
    if not data.HasField("ndarray"):
        return None
    np = dt.require("numpy", "an ndarray argument")
    proto = data.ndarray
    try:
        flat = np.frombuffer(proto.buffer, dtype=np.dtype(proto.dtype))
        return flat.reshape(tuple(proto.shape))
    except (TypeError, ValueError) as exc:
        shape = list(proto.shape)
        raise WireError(f"bad ndarray (dtype {proto.dtype!r}, shape {shape}): {exc}") from None


def _decode_json(_field: Field, data: Data) -> Any:
    if not data.HasField("struct_value"):
        return None
    value = struct_to_python(data.struct_value)
    if isinstance(value, dict) and list(value) == ["_list"]:
        return value["_list"]
    return value


def struct_to_python(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A ``Struct`` as plain Python, whole numbers as ``int``."""
    return {key: _value_to_python(value) for key, value in struct.fields.items()}


def _value_to_python(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return struct_to_python(value.struct_value)
    if kind == "list_value":
        return [_value_to_python(v) for v in value.list_value.values]
    if kind == "number_value":
        number = value.number_value
        whole = number.is_integer() and abs(number) <= _MAX_EXACT_INT
        return int(number) if whole else number
    if kind in ("string_value", "bool_value"):
        return getattr(value, kind)
    return None


def _decode_list(field: Field, data: Data) -> list[Any]:
    inner = field.type_args[0]
    if inner.type in _REPEATED:
        attr, cls = _REPEATED[inner.type]
        return [cls.from_proto(entry) for entry in getattr(data, attr)]  # type: ignore[attr-defined]
    values = []
    for i, part in enumerate(data.parts):
        with _at(f"[{i}]"):
            values.append(decode(inner, part.data))
    return values


def _decode_tuple(field: Field, data: Data) -> tuple[Any, ...] | None:
    if not data.parts:
        return None
    if len(data.parts) != len(field.type_args):
        raise WireError(f"expected a tuple of {len(field.type_args)}, got {len(data.parts)} parts")
    values = []
    for i, (inner, part) in enumerate(zip(field.type_args, data.parts, strict=True)):
        with _at(f"[{i}]"):
            values.append(decode(inner, part.data))
    return tuple(values)


def _decode_named_fields(field: Field, data: Data) -> dt.NamedFields | None:
    if not data.parts:
        return None
    parts = {part.id: part for part in data.parts}
    values = {}
    for inner in field.type_args:
        if inner.name not in parts:
            raise WireError(f"missing field {inner.name!r} (got parts {sorted(parts)})")
        with _at(f".{inner.name}"):
            values[inner.name] = decode(inner, parts[inner.name].data)
    return dt.NamedFields(**values)


_CONTAINER_DECODERS: dict[int, Callable[[Field, Data], Any]] = {
    DataType.LIST: _decode_list,
    DataType.TUPLE: _decode_tuple,
    DataType.NAMED_FIELDS: _decode_named_fields,
    DataType.NDARRAY: _decode_ndarray,
    DataType.JSON_DATA: _decode_json,
}


# -- arguments: one part per name ----------------------------------------------------------


def encode_args(fields: Sequence[Field], values: Mapping[str, Any], data: Data) -> None:
    """Put each value in its own ``data.parts[]`` entry (``id`` = the name), in field order.

    As the official client does: a missing optional value, or None where the default is
    None, is left out (the receiver applies the default); a missing required one raises.
    """
    unknown = sorted(set(values) - {f.name for f in fields})
    if unknown:
        raise WireError(f"unexpected argument(s) {unknown}")
    for field in fields:
        if field.name not in values:
            if field.required:
                raise WireError(f"missing required argument {field.name!r}")
            continue
        value = values[field.name]
        if value is None and field.default == "null":
            continue
        with _at(field.name):
            encode(field, value, data.parts.add(id=field.name).data)


def decode_args(fields: Sequence[Field], data: Data) -> dict[str, Any]:
    """The values of the ``data.parts[]`` entries named after ``fields`` (others ignored)."""
    parts = {part.id: part for part in data.parts}
    values = {}
    for field in fields:
        if field.name in parts:
            with _at(field.name):
                values[field.name] = decode(field, parts[field.name].data)
    return values
