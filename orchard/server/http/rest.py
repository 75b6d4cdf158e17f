"""The REST/JSON view of the V2 API: every RPC at the paths its ``google.api.http`` options
give, answered by the same handlers as gRPC.

One Starlette route claims ``/v2/...`` (except ``/v2/ext/...``, left to the other parts of the
HTTP listener) and answers in plain ASGI, off Starlette's per-route regular expressions: the
route table (:mod:`orchard.server.http.routes`) finds the binding, the JSON mapping
(:mod:`orchard.server.http.json_mapping`) builds the request, and :class:`GrpcAdapter` runs it with
the request's ``Authorization`` header (``Key <PAT>`` or ``Bearer <PAT>``) as the call's
metadata, so authentication, validation and isolation are the gRPC path's.

- A unary RPC answers one JSON object. The HTTP status is 200 with the V2 status in the body,
  except bad credentials (401) and resources not found (404), as the hosted API answers.
- A server-streaming RPC (``GenerateModelOutputs``) answers newline-delimited JSON, or
  server-sent events when ``Accept`` names ``text/event-stream``. A client that goes away
  cancels the call, down to the replica running it.
- Client-streaming RPCs (``StreamModelOutputs``, uploads, the runners' work stream) need many
  requests on one call, which an HTTP/1.1 request-response cannot carry: they answer 400,
  saying to use gRPC.
- A body that is not JSON of the request message answers 400 naming the field; one over the
  server's ``max_request_bytes`` answers 413; an unknown path 404 and a known path with another
  verb 405, each with a V2-shaped JSON body.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from clarifai_grpc.grpc.api.status import status_code_pb2
from google.protobuf.message import Message
from starlette.routing import BaseRoute, Match
from starlette.types import Receive, Scope, Send

from orchard.server.http import json_mapping
from orchard.server.http.routes import Binding, RouteTable, bindings, split_path
from orchard.server.rpc import new_request_id

if TYPE_CHECKING:  # app.py assembles the routes of every part, this one's too
    from orchard.server.http.app import HttpContext

log = logging.getLogger(__name__)
T = TypeVar("T")
JSON = b"application/json"
NDJSON = b"application/x-ndjson"
SSE = b"text/event-stream"
EXTENSIONS = "/v2/ext/"  # the OpenAI-compatible API and other parts live under here


@functools.cache
def route_table() -> RouteTable:
    """The V2 service's routing table, built once per process."""
    return RouteTable(bindings())


class Exchange:
    """One HTTP request as the REST view reads it: its verb, path, query and the headers it
    uses."""

    __slots__ = ("accept", "authorization", "content_length", "path", "query", "verb")

    def __init__(self, scope: Scope) -> None:
        self.verb: str = scope["method"]
        raw = scope.get("raw_path")
        self.path = raw.decode("latin-1") if raw else scope["path"]
        self.query: bytes = scope.get("query_string", b"")
        self.authorization = self.accept = b""
        self.content_length = -1
        for name, value in scope["headers"]:
            if name == b"authorization":
                self.authorization = value
            elif name == b"accept":
                self.accept = value
            elif name == b"content-length" and value.isdigit():
                self.content_length = int(value)

    @property
    def wants_stream(self) -> bool:
        return SSE in self.accept or NDJSON in self.accept

    def metadata(self) -> tuple[tuple[str, str], ...]:
        if not self.authorization:
            return ()
        return (("authorization", self.authorization.decode("latin-1")),)


async def respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def respond_json(send: Send, status: int, body: bytes, *extra: tuple[bytes, bytes]) -> None:
    headers = [(b"content-type", JSON), (b"content-length", str(len(body)).encode()), *extra]
    await respond(send, status, body, headers)


async def refuse(
    send: Send, http_status: int, code: int, text: str, *extra: tuple[bytes, bytes]
) -> None:
    """A V2-shaped refusal of the HTTP request itself."""
    body = json_mapping.status_body(code, text, req_id=new_request_id())
    await respond_json(send, http_status, body, *extra)


async def read_body(receive: Receive, exchange: Exchange, limit: int) -> bytes:
    """The whole request body, refused (413) past ``limit`` bytes."""
    if exchange.content_length > limit:
        raise json_mapping.BadRequest(_too_large(exchange.content_length, limit), 413)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise json_mapping.BadRequest(_too_large(size, limit), 413)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(size: int, limit: int) -> str:
    return (
        f"the request body is larger than this server accepts ({size} > {limit} bytes); "
        "send a smaller request, URL inputs in place of inline bytes, or ask the operator "
        "to raise `orchard serve --max-request-bytes`"
    )


def internal_error_body(request_id: str) -> bytes:
    """The body of a 500, built with nothing that could fail in turn."""
    text = f"internal error (request id {request_id}); the server log has the details"
    status = {"code": status_code_pb2.INTERNAL_UNCATEGORIZED, "description": text}
    return json.dumps({"status": status | {"req_id": request_id}}).encode()


class ClientGone(Exception):
    """The client closed its connection before the request was read."""


async def _disconnected(receive: Receive) -> None:
    """Returns when the client goes away (the body has been read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class RestRoute(BaseRoute):
    """Every V2 binding, as one route of the HTTP app."""

    def __init__(self, context: HttpContext) -> None:
        self.context = context
        self.adapter = context.adapter
        self.table = route_table()
        self.query_fields = json_mapping.QueryFields()
        self.mappings: dict[int, json_mapping.RequestMapping] = {}

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http":
            return Match.NONE, {}
        path: str = scope["path"]
        if (path == "/v2" or path.startswith("/v2/")) and not path.startswith(EXTENSIONS):
            return Match.FULL, {}
        return Match.NONE, {}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._serve(Exchange(scope), receive, send)
        except ClientGone:
            return
        except Exception:
            request_id = new_request_id()
            log.exception("internal error in a REST call (request id %s)", request_id)
            await respond_json(send, 500, internal_error_body(request_id))

    async def _serve(self, exchange: Exchange, receive: Receive, send: Send) -> None:
        segments = split_path(exchange.path)
        match = self.table.match(exchange.verb, segments, exchange.wants_stream)
        if match is None:
            await self._unmatched(exchange, segments, send)
            return
        binding = match.binding
        if binding.client_streaming:
            await refuse(send, 400, status_code_pb2.CONN_INVALID_REQUEST, self._grpc_only(binding))
            return
        try:
            body = await read_body(receive, exchange, self.context.max_request_bytes)
            request = self._mapping(binding).build(match.values, exchange.query, body)
        except json_mapping.BadRequest as exc:
            await refuse(send, exc.http_status, status_code_pb2.CONN_INVALID_REQUEST, exc.message)
            return
        if binding.streaming:
            await self._stream(binding, request, exchange, receive, send)
        else:
            await self._unary(binding, request, exchange, receive, send)

    def _mapping(self, binding: Binding) -> json_mapping.RequestMapping:
        found = self.mappings.get(binding.order)
        if found is None:
            found = self.mappings[binding.order] = json_mapping.RequestMapping(
                binding, self.query_fields
            )
        return found

    async def _unmatched(self, exchange: Exchange, segments: list[str], send: Send) -> None:
        verbs = self.table.verbs_for(segments)
        if verbs:
            allow = ", ".join(verbs)
            text = f"{exchange.verb} is not a method of {exchange.path}; it answers {allow}"
            await refuse(
                send, 405, status_code_pb2.CONN_INVALID_REQUEST, text, (b"allow", allow.encode())
            )
            return
        text = (
            f"no V2 route {exchange.verb} {exchange.path}; the routes are the `google.api.http` "
            "bindings of clarifai.api.V2 (docs/http.md)"
        )
        await refuse(send, 404, status_code_pb2.CONN_DOES_NOT_EXIST, text)

    def _grpc_only(self, binding: Binding) -> str:
        return (
            f"{binding.rpc} is a client-streaming RPC: one call carries many requests, which a "
            "single HTTP request cannot; call it over gRPC "
            f"(port {self.context.grpc_port} of this server, e.g. with `orchard` or the "
            "clarifai SDK)"
        )

    async def _unary(
        self, binding: Binding, request: Message, exchange: Exchange, receive: Receive, send: Send
    ) -> None:
        name, metadata = binding.rpc, exchange.metadata()
        if name in self.adapter.router.handlers:  # control plane: short, in one transaction
            response = await self.adapter.serve_unary(name, request, metadata)
        else:  # a prediction (a stream handler serving one request), or not served
            responses = self.adapter.responses(name, request, metadata)
            answer = await until_gone(_last(responses), receive, responses)
            if answer is None:
                return  # the client went away; the call is cancelled
            response = answer
        await respond_json(send, json_mapping.http_status(response), json_mapping.encode(response))

    async def _stream(
        self, binding: Binding, request: Message, exchange: Exchange, receive: Receive, send: Send
    ) -> None:
        responses = self.adapter.responses(binding.rpc, request, exchange.metadata())
        framing = sse_frame if SSE in exchange.accept else ndjson_frame
        media = SSE if framing is sse_frame else NDJSON
        await until_gone(_pump(responses, send, framing, media), receive, responses)


async def _last(responses: AsyncGenerator[Message, None]) -> Message:
    answer: Message | None = None
    async for response in responses:
        answer = response
    assert answer is not None  # every call ends with a response: its answer, or its error
    return answer


def ndjson_frame(body: bytes) -> bytes:
    return body + b"\n"


def sse_frame(body: bytes) -> bytes:
    return b"data: " + body + b"\n\n"


async def _pump(
    responses: AsyncGenerator[Message, None],
    send: Send,
    framing: Callable[[bytes], bytes],
    media: bytes,
) -> None:
    """Send each response as it comes; the HTTP status follows the first one's status. An
    error of the server's own after the first response ends the stream there (the status line
    is gone): it is logged with a request id, which the last line carries."""
    started = False
    try:
        async for response in responses:
            if not started:
                headers = [(b"content-type", media), (b"cache-control", b"no-cache")]
                status = json_mapping.http_status(response)
                await send({"type": "http.response.start", "status": status, "headers": headers})
                started = True
            chunk = framing(json_mapping.encode(response))
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except Exception:
        if not started:
            raise  # answered as a 500 by the route
        request_id = new_request_id()
        log.exception("internal error in a REST stream (request id %s)", request_id)
        chunk = framing(internal_error_body(request_id))
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def until_gone(
    work: Awaitable[T], receive: Receive, responses: AsyncGenerator[Message, None]
) -> T | None:
    """``work`` (which consumes ``responses``), run in this task; None if the client goes away
    first. Then this task is cancelled at the point ``work`` waits, which cancels the call: the
    handler's generator gets the cancellation, and the replica running the call the item's
    cancel. One watching task, and no other, per call."""
    task = asyncio.current_task()
    assert task is not None
    state = {"gone": False, "done": False}

    def client_left(watch: asyncio.Future[None]) -> None:
        if watch.cancelled():
            return
        watch.exception()  # a connection that failed is a client gone too (its error is read)
        if not state["done"]:
            state["gone"] = True
            task.cancel()

    watch = asyncio.ensure_future(_disconnected(receive))
    watch.add_done_callback(client_left)
    try:
        return await work
    except asyncio.CancelledError:
        if not state["gone"]:
            raise  # cancelled from elsewhere (the server stopping)
        return None
    finally:
        state["done"] = True  # no await between work's end and here: no late cancel
        watch.cancel()
        if state["gone"]:
            task.uncancel()  # the cancel was the call's, not this task's
        await responses.aclose()


def rest_routes(context: HttpContext) -> list[BaseRoute]:
    """The REST view's one route (see the module's docstring)."""
    return [RestRoute(context)]
