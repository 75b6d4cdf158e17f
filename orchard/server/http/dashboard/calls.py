"""The dashboard's calls of the API: the same handlers as gRPC, through the adapter, with the
signed-in user's PAT, so that isolation, validation and errors are the API's own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from clarifai_grpc.grpc.api.status import status_code_pb2, status_pb2
from google.protobuf import json_format
from google.protobuf.message import Message

from orchard import errors, wire
from orchard.server.http.dashboard.sessions import DashboardSession
from orchard.server.rpc import GrpcAdapter


class ApiError(Exception):
    """A call the API answered with a status other than success."""

    def __init__(self, status: status_pb2.Status) -> None:
        super().__init__(status.description)
        self.status = status

    @property
    def http_status(self) -> int:
        error = errors.from_status(self.status)
        if isinstance(error, errors.AuthenticationError):
            return 401
        if isinstance(error, errors.NotFound):
            return 404
        if isinstance(error, errors.InternalError):
            return 500
        return 400

    def as_json(self) -> dict[str, Any]:
        return {
            "error": self.status.description or "request failed",
            "code": status_code_pb2.StatusCode.Name(self.status.code),
            "req_id": self.status.req_id,
        }


def to_json(message: Message, *, enum_numbers: bool = False) -> dict[str, Any]:
    """A message as the pages read it: protobuf field names, zeros included; enums by name
    (or, with ``enum_numbers``, by number, as the YAML writes them)."""
    return json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
        use_integers_for_enums=enum_numbers,
    )


class Api:
    """One signed-in user's view of the API."""

    def __init__(self, adapter: GrpcAdapter, session: DashboardSession) -> None:
        self.adapter, self.session = adapter, session

    @property
    def user_id(self) -> str:
        return self.session.user_id

    def request(self, name: str, **fields: Any) -> Any:
        """``name``'s request with ``fields`` (and the caller's user id, when not given)."""
        request = wire.request_class(name)()
        if "user_app_id" in request.DESCRIPTOR.fields_by_name:
            request.user_app_id.user_id = self.user_id
        json_format.ParseDict(fields, request)
        return request

    async def call(self, name: str, request: Message | None = None, **fields: Any) -> Any:
        """The response of unary RPC ``name``; :class:`ApiError` unless it succeeded."""
        message = request if request is not None else self.request(name, **fields)
        response: Any = await self.adapter.serve_unary(name, message, self.session.metadata)
        if response.status.code != status_code_pb2.SUCCESS:
            raise ApiError(response.status)
        return response

    async def responses(
        self, name: str, request: Message, remaining: float | None = None
    ) -> AsyncIterator[Any]:
        """The responses of a (streaming) prediction RPC, as they come."""
        async for response in self.adapter.responses(
            name, request, self.session.metadata, remaining
        ):
            yield response
