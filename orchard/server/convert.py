"""Small conversions shared by the resource modules."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from clarifai_grpc.grpc.api.status import status_code_pb2, status_pb2
from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message

from orchard import errors
from orchard.configs import Spec, validate
from orchard.services.common import Page, patch_fields

if TYPE_CHECKING:
    from orchard.server.rpc import Call


def done(call: Call, details: str = "") -> status_pb2.BaseResponse:
    """The answer to a call that returns nothing but its status (deletes)."""
    return status_pb2.BaseResponse(
        status=status_pb2.Status(
            code=status_code_pb2.SUCCESS, description="Ok", details=details, req_id=call.request_id
        )
    )


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value.replace(tzinfo=UTC))
    return ts


def stamp(message: Any, row: Any) -> None:
    """Copy a row's created/modified times into a resource message."""
    message.created_at.CopyFrom(timestamp(row.created_at))
    if hasattr(message, "modified_at"):
        message.modified_at.CopyFrom(timestamp(row.modified_at))


def fill(message: Message, data: dict[str, Any]) -> Message:
    json_format.ParseDict(data, message, ignore_unknown_fields=True)
    return message


def as_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, use_integers_for_enums=True
    )


def page(request: Any) -> Page:
    return Page.of(request.page, request.per_page)


def patched(
    current: Message,
    patch: Message,
    action: str,
    spec: type[Spec],
    *,
    where: str,
    error: type[errors.OrchardError],
) -> Any:
    """The spec a Patch* request asks for: ``overwrite`` replaces the fields the patch sets,
    ``merge`` merges nested objects field by field."""
    base = {k: v for k, v in as_dict(current).items() if k not in spec.OUTPUT_FIELDS}
    change = {k: v for k, v in as_dict(patch).items() if k not in spec.OUTPUT_FIELDS}
    return validate(spec, patch_fields(base, change, action, error), where=where, error=error)
