"""JSON in and out of the V2 messages for the REST view (the protobuf JSON mapping).

A request is built from three parts, in this order, later ones winning: the JSON body (as the
binding's body rule says: ``*`` the whole request, a field name that field), the query string
(for bindings without a whole-request body: ``page=2``, nested ``a.b=x``, a repeated field
given more than once, enums by name or number, booleans ``true``/``false``), and the path's
variables. Field names may be snake_case or camelCase; unknown fields and query parameters are
ignored, so that clients built against newer protos keep working. The whole is parsed once
with ``json_format.ParseDict``.

Responses are the protobuf JSON mapping with the protos' field names and enums as numbers, as
the hosted API writes them. A problem with the request itself raises :class:`BadRequest`,
whose text names the field and what to send instead.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from clarifai_grpc.grpc.api.status import status_code_pb2, status_pb2
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from orchard import errors
from orchard.server.http.routes import Binding, field_chain

_PARSE_STEP = re.compile(r"Failed to parse (\w+) field: ")
_QUERY_CACHE_LIMIT = 4096


class BadRequest(Exception):
    """A request that is not JSON of the method's request message; ``http_status`` is what
    the client gets (400, or 413 for a body over the server's limit)."""

    def __init__(self, message: str, http_status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status


@dataclass(frozen=True)
class Leaf:
    """Where a path variable or query parameter goes: the keys to it from the request's top,
    as the proto and JSON names of each field, and the field itself."""

    keys: tuple[tuple[str, str], ...]
    field: FieldDescriptor


def leaf(chain: tuple[FieldDescriptor, ...]) -> Leaf:
    return Leaf(tuple((f.name, f.json_name) for f in chain), chain[-1])


def _set(data: dict[str, Any], target: Leaf, value: Any, append: bool = False) -> None:
    """Put ``value`` at ``target`` in a JSON object, reusing the spelling (snake or camel) a
    key already has there, so the parser never sees one field twice."""
    node = data
    for proto_name, json_name in target.keys[:-1]:
        key = json_name if json_name in node and proto_name not in node else proto_name
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    proto_name, json_name = target.keys[-1]
    key = json_name if json_name in node and proto_name not in node else proto_name
    if append:
        existing = node.get(key)
        node[key] = [*existing, value] if isinstance(existing, list) else [value]
    else:
        node[key] = value


_JSON_KINDS = {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}
_JSON_KINDS[type(None)] = "null"
_TRUE, _FALSE = frozenset({"true", "1"}), frozenset({"false", "0"})


def scalar(field: FieldDescriptor, text: str) -> Any:
    """A path or query string as the JSON value the field's parser takes."""
    if field.type == FieldDescriptor.TYPE_BOOL:
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        return text  # the parser names the field and says what it wanted
    if field.type == FieldDescriptor.TYPE_ENUM and text.lstrip("-").isdigit():
        return int(text)
    return text


class QueryFields:
    """Query parameter names resolved to request fields, remembered per message type."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], Leaf | None] = {}

    def resolve(self, message: Descriptor, name: str) -> Leaf | None:
        key = (message.full_name, name)
        if key in self._cache:
            return self._cache[key]
        found = self._walk(message, name)
        if len(self._cache) >= _QUERY_CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = found
        return found

    @staticmethod
    def _walk(message: Descriptor, name: str) -> Leaf | None:
        chain: list[FieldDescriptor] = []
        current: Descriptor | None = message
        for part in name.split("."):
            if current is None:
                return None
            found = current.fields_by_name.get(part) or current.fields_by_camelcase_name.get(part)
            if found is None:
                return None
            chain.append(found)
            current = found.message_type
        return leaf(tuple(chain))


class RequestMapping:
    """Builds the request message of one binding from its path values, query and body."""

    def __init__(self, binding: Binding, query_fields: QueryFields) -> None:
        self.binding = binding
        self.request_class: Any = message_factory.GetMessageClass(binding.method.input_type)
        self.variables = tuple(leaf(v.fields) for v in binding.variables)
        named = binding.body not in ("", "*")
        self.body_field = (
            leaf(field_chain(binding.method.input_type, binding.body)) if named else None
        )
        self.query_fields = query_fields

    def build(self, values: tuple[str, ...], query: bytes, body: bytes) -> Message:
        data = self._body(body)
        if self.binding.body != "*" and query:
            self._query(data, query)
        for target, value in zip(self.variables, values, strict=True):
            _set(data, target, scalar(target.field, value))
        request = self.request_class()
        try:
            json_format.ParseDict(data, request, ignore_unknown_fields=True)
        except json_format.ParseError as exc:
            raise BadRequest(field_problem(str(exc), self.binding)) from None
        return request  # type: ignore[no-any-return]

    def _body(self, body: bytes) -> dict[str, Any]:
        if not body.strip():
            return {}
        try:
            parsed = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(
                f"the body is not JSON ({exc}); send a JSON object of "
                f"{self.binding.method.input_type.name} with Content-Type: application/json"
            ) from None
        if self.body_field is not None:
            data: dict[str, Any] = {}
            _set(data, self.body_field, parsed)
            return data
        if not isinstance(parsed, dict):
            raise BadRequest(
                f"the body is a JSON {_JSON_KINDS.get(type(parsed), 'value')}; send a JSON "
                f"object of {self.binding.method.input_type.name}"
            )
        return parsed  # body "*", and (leniently) a body sent where the rule names none

    def _query(self, data: dict[str, Any], query: bytes) -> None:
        message = self.binding.method.input_type
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=False):
            target = self.query_fields.resolve(message, name)
            typed = text_field(target.field) if target is not None else None
            if target is None or typed is None:
                continue  # unknown parameters are ignored; a message can't come from text
            _set(data, target, scalar(typed, value), append=bool(target.field.is_repeated))


_ONE_STRING = frozenset(
    {"google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask"}
)
_WRAPPERS = frozenset(
    f"google.protobuf.{kind}Value"
    for kind in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
)


def text_field(field: FieldDescriptor) -> FieldDescriptor | None:
    """The field whose type a query string's value has, for a field that can come from text:
    a scalar or enum itself, a wrapper's ``value``, a well-known type written as one string;
    None for any other message."""
    message = field.message_type
    if message is None or message.full_name in _ONE_STRING:
        return field
    if message.full_name in _WRAPPERS:
        found: FieldDescriptor = message.fields_by_name["value"]
        return found
    return None


def field_problem(parser_text: str, binding: Binding) -> str:
    """The parser's complaint as: which field, what was wrong, and what to send."""
    steps = _PARSE_STEP.findall(parser_text)
    reason = _PARSE_STEP.sub("", parser_text).strip().rstrip(".")
    type_name = binding.method.input_type.name
    where = f"field {'.'.join(steps)!r} of {type_name}" if steps else type_name
    return (
        f"{where}: {reason}; send the protobuf JSON mapping of {type_name} "
        "(strings for text and 64-bit numbers, base64 for bytes, enums by name or number)"
    )


def encode(message: Message) -> bytes:
    """A response as JSON bytes."""
    as_dict = json_format.MessageToDict(
        message, preserving_proto_field_name=True, use_integers_for_enums=True
    )
    return json.dumps(as_dict, separators=(",", ":"), ensure_ascii=False).encode()


def status_body(code: int, description: str, details: str = "", req_id: str = "") -> bytes:
    """A V2-shaped body carrying only a status."""
    status = status_pb2.Status(code=code, description=description, details=details, req_id=req_id)
    return encode(status_wrapper(status))


def status_wrapper(status: status_pb2.Status) -> Message:
    response: Message = status_pb2.BaseResponse(status=status)
    return response


def _http_statuses() -> dict[int, int]:
    """V2 status codes the hosted API answers with another HTTP status than 200: bad
    credentials 401, a resource that is not there 404."""
    table: dict[int, int] = {}
    for code in status_code_pb2.StatusCode.values():
        cls = errors.error_class_for(code)
        if issubclass(cls, errors.AuthenticationError):
            table[code] = 401
        elif issubclass(cls, errors.NotFound):
            table[code] = 404
    table[status_code_pb2.CONN_TOKEN_INVALID] = 401
    table[status_code_pb2.CONN_INSUFFICIENT_SCOPES] = 403
    return table


HTTP_STATUS = _http_statuses()


def http_status(response: Message) -> int:
    """The HTTP status of a V2 response: 200 unless its status is in :data:`HTTP_STATUS`."""
    code = int(response.status.code)  # type: ignore[attr-defined]
    return HTTP_STATUS.get(code, 200)
