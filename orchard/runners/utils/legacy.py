"""Old-format data: inputs without ``parts`` and the outputs their callers read.

``Model.predict_by_url`` / ``predict_by_bytes`` (and ``generate_by_*``, ``stream_by_*``) send
``Data{text.raw | image | audio | video ...}`` with no parts. As in the official SDK
(``clarifai/runners/utils/data_utils.py::DataConverter``), each declared parameter, in order,
takes the first unused old-format value of its type (``str`` ← ``text.raw`` or
``string_value``, ``Image`` ← ``image``, ``List[Concept]`` ← ``concepts``, ...). Orchard adds
one conversion: a ``bytes`` parameter also takes the bytes of an image, audio or video, or the
raw text, so ``predict_by_bytes`` reaches ``def predict(self, data: bytes)``.

Outputs of such calls keep their ``return`` part and also carry its payload at the top level,
with a string copied into ``text.raw``: ``outputs[0].data.text.raw`` works as it always did.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TypeAlias

from clarifai_grpc.grpc.api import resources_pb2

from orchard.runners.utils.method_signatures import RETURN

Data: TypeAlias = resources_pb2.Data
Field: TypeAlias = resources_pb2.ModelTypeField
DataType = resources_pb2.ModelTypeField.DataType

_MESSAGES = ("image", "video", "text", "audio", "ndarray", "struct_value", "geo")
_REPEATED = ("concepts", "regions", "frames", "colors", "clusters", "embeddings", "tracks")
_SCALARS = ("int_value", "float_value", "bytes_value", "bool_value", "string_value")
_LIST = DataType.LIST  # read once: the enum wrapper resolves each name slowly
_REPEATED_OF = {DataType.CONCEPT: "concepts", DataType.REGION: "regions", DataType.FRAME: "frames"}


def is_legacy(data: Data) -> bool:
    """No parts but a payload; ``metadata`` alone (say, only ``_method_name``) is not one."""
    if data.parts:
        return False
    return (
        any(data.HasField(name) for name in _MESSAGES)
        or any(len(getattr(data, name)) for name in _REPEATED)
        or any(getattr(data, name) for name in _SCALARS)
    )


def to_parts(data: Data, fields: Sequence[Field]) -> Data:
    """The old-format payload of ``data`` as one part per field that finds a value."""
    rest = Data()
    rest.CopyFrom(data)
    converted = Data()
    for field in fields:
        taken = _take(field, rest)
        if taken is not None:
            converted.parts.add(id=field.name).data.CopyFrom(taken)
    return converted


def to_legacy_output(data: Data) -> None:
    """Copy the ``return`` part's payload (not its nested parts) to the top of ``data``."""
    for part in data.parts:
        if part.id == RETURN:
            payload = Data()
            payload.CopyFrom(part.data)
            payload.ClearField("parts")
            data.MergeFrom(payload)
            if payload.string_value:
                data.text.raw = payload.string_value
            return


def _take(field: Field, rest: Data) -> Data | None:
    kind = field.type
    if kind == _LIST and field.type_args[0].type in _REPEATED_OF:
        kind = field.type_args[0].type
    if kind in _REPEATED_OF:
        return _move_repeated(rest, _REPEATED_OF[kind])
    taker = _TAKERS.get(kind)
    return taker(rest) if taker else None


def _move_message(rest: Data, name: str) -> Data | None:
    if not rest.HasField(name):
        return None
    taken = Data()
    getattr(taken, name).CopyFrom(getattr(rest, name))
    rest.ClearField(name)
    return taken


def _move_repeated(rest: Data, name: str) -> Data | None:
    if not len(getattr(rest, name)):
        return None
    taken = Data()
    getattr(taken, name).extend(getattr(rest, name))
    rest.ClearField(name)
    return taken


def _move_scalar(rest: Data, name: str) -> Data | None:
    if not getattr(rest, name):
        return None
    taken = Data()
    setattr(taken, name, getattr(rest, name))
    rest.ClearField(name)
    return taken


def _take_str(rest: Data) -> Data | None:
    if rest.text.raw:
        taken = Data(string_value=rest.text.raw)
        rest.ClearField("text")
        return taken
    return _move_scalar(rest, "string_value")


def _take_text(rest: Data) -> Data | None:
    taken = _move_message(rest, "text")
    if taken is None and rest.string_value:
        taken = Data(text=resources_pb2.Text(raw=rest.string_value))
        rest.ClearField("string_value")
    return taken


def _take_bytes(rest: Data) -> Data | None:
    taken = _move_scalar(rest, "bytes_value")
    for name in ("image", "audio", "video"):
        if taken is None and getattr(rest, name).base64:
            taken = Data(bytes_value=getattr(rest, name).base64)
            rest.ClearField(name)
    if taken is None and rest.text.raw:
        taken = Data(bytes_value=rest.text.raw.encode())
        rest.ClearField("text")
    return taken


def _take_json(rest: Data) -> Data | None:
    """``struct_value``, or (as the official SDK does) a JSON object in ``string_value``."""
    taken = _move_message(rest, "struct_value")
    if taken is None and rest.string_value:
        try:
            value = json.loads(rest.string_value)
        except ValueError:
            return None
        if isinstance(value, dict):
            taken = Data()
            taken.struct_value.update(value)
            rest.ClearField("string_value")
    return taken


_TAKERS: dict[int, Callable[[Data], Data | None]] = {
    DataType.STR: _take_str,
    DataType.TEXT: _take_text,
    DataType.BYTES: _take_bytes,
    DataType.INT: lambda rest: _move_scalar(rest, "int_value"),
    DataType.FLOAT: lambda rest: _move_scalar(rest, "float_value"),
    DataType.BOOL: lambda rest: _move_scalar(rest, "bool_value"),
    DataType.IMAGE: lambda rest: _move_message(rest, "image"),
    DataType.AUDIO: lambda rest: _move_message(rest, "audio"),
    DataType.VIDEO: lambda rest: _move_message(rest, "video"),
    DataType.NDARRAY: lambda rest: _move_message(rest, "ndarray"),
    DataType.JSON_DATA: _take_json,
}
