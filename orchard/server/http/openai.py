"""The OpenAI-compatible API under ``/v2/ext/openai/v1``: chat completions, completions,
embeddings, responses and the list of models, for the official ``openai`` client and its
peers.

Each call is a V2 prediction run through :meth:`GrpcAdapter.responses`, so it gets what a gRPC
prediction gets: the PAT (``Authorization: Bearer <PAT>`` or ``Key <PAT>``), routing (the
caller's deployment of the model ``model`` names, or ``deployment_id`` in the body), the hold
while a deployment scales from zero, the queue bound and cancellation. Conversions and the
error mapping are in :mod:`orchard.server.http.openai_wire`.

Streaming (``"stream": true``) answers Server-Sent Events: ``data: <chunk JSON>`` per chunk,
then ``data: [DONE]``; a failure once the stream has begun is a last ``data: {"error": ...}``.
A client that disconnects cancels the call, and so its item on the replica: before the answer
(a unary call, or a stream still waiting for its first chunk) the route watches for it; once a
stream has begun Starlette cancels it, and the cancel reaches the dispatcher through the
adapter's generator. A body over the server's ``--max-request-bytes`` is refused (413).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from google.protobuf.message import Message
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from orchard import errors
from orchard.server.http import openai_wire as wire
from orchard.server.http.openai_wire import OpenAIError, bad_request, require
from orchard.server.rpc import new_request_id, token_of
from orchard.services.common import MAX_PER_PAGE

if TYPE_CHECKING:  # app.py includes these routes
    from orchard.server.http.app import HttpContext

log = logging.getLogger(__name__)
PREFIX = "/v2/ext/openai/v1"
Metadata = list[tuple[str, str]]
Checker = Callable[[dict[str, Any]], None]


def _metadata(request: Request) -> Metadata:
    header = request.headers.get("authorization")
    return [("authorization", header)] if header else []


def error_response(error: OpenAIError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers())


def _internal(exc: Exception) -> OpenAIError:
    request_id = new_request_id()
    log.error(
        "internal error in the OpenAI-compatible API (request id %s)", request_id, exc_info=exc
    )
    message = f"internal error (request id {request_id}); the server log has the details"
    return OpenAIError(500, message, type="server_error")


def _check_chat(body: dict[str, Any]) -> None:
    require(body, "messages", list, "a list of messages")
    if not body["messages"]:
        raise bad_request("'messages' must hold at least one message", "messages")


def _check_completion(body: dict[str, Any]) -> None:
    require(body, "prompt", (str, list), "a string or a list of strings or token ids")


def _check_embeddings(body: dict[str, Any]) -> None:
    require(body, "input", (str, list), "a string or a list of strings or token ids")


def _check_responses(body: dict[str, Any]) -> None:
    require(body, "input", (str, list), "a string or a list of input items")


def _wants_stream(body: dict[str, Any], streams: bool) -> bool:
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise bad_request("'stream' must be true or false", "stream")
    if stream and not streams:
        raise bad_request("this endpoint does not stream; leave 'stream' out", "stream")
    return bool(stream)


class OpenAIRoutes:
    """The endpoint's routes over one :class:`HttpContext`."""

    def __init__(self, context: HttpContext) -> None:
        self.context = context

    def routes(self) -> list[BaseRoute]:
        predictions: list[tuple[str, Checker, bool]] = [
            ("/chat/completions", _check_chat, True),
            ("/completions", _check_completion, True),
            ("/embeddings", _check_embeddings, False),
            ("/responses", _check_responses, True),
        ]
        routes: list[BaseRoute] = [
            Route(PREFIX + path, self._endpoint(path, check, streams), methods=["POST"])
            for path, check, streams in predictions
        ]
        routes.append(Route(PREFIX + "/models", self.models, methods=["GET"]))
        return routes

    def _endpoint(
        self, path: str, check: Checker, streams: bool
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                await self._authenticate(request)
                body = wire.parse_body(await self._body(request))
                stream = _wants_stream(body, streams)
                v2 = wire.prediction(body, path, stream)
                check(body)
                metadata = _metadata(request)
                work = self._stream(v2, metadata) if stream else self._unary(v2, metadata)
                return await _unless_disconnected(request, work)
            except OpenAIError as error:
                return error_response(error)
            except Exception as exc:
                return error_response(_internal(exc))

        return endpoint

    async def _authenticate(self, request: Request) -> None:
        """A call without a valid key is refused before its body is read (401)."""
        try:
            token = token_of(_metadata(request))
        except errors.AuthenticationError:
            raise OpenAIError(
                401,
                "no API key: send 'Authorization: Bearer <PAT>' (the openai client's api_key)",
                code="invalid_api_key",
            ) from None
        try:
            await self.context.adapter.authenticate(token)
        except errors.OrchardError as exc:
            raise wire.from_status(exc.to_status()) from None

    async def _body(self, request: Request) -> bytes:
        """The request's body, refused (413) past the server's ``--max-request-bytes``."""
        limit = self.context.max_request_bytes
        too_large = OpenAIError(
            413,
            f"the request body is over the server's limit of {limit} bytes",
            code="request_too_large",
        )
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        pieces, size = [], 0
        async for piece in request.stream():
            size += len(piece)
            if size > limit:
                raise too_large
            pieces.append(piece)
        return b"".join(pieces)

    def _responses(
        self, name: str, request: Message, metadata: Metadata
    ) -> AsyncGenerator[Message, None]:
        return self.context.adapter.responses(name, request, metadata)

    async def _unary(
        self, request: service_pb2.PostModelOutputsRequest, metadata: Metadata
    ) -> Response:
        answer: list[str] = []
        responses = self._responses("PostModelOutputs", request, metadata)
        async with contextlib.aclosing(responses):
            async for response in responses:
                assert isinstance(response, service_pb2.MultiOutputResponse)
                answer = wire.answers(response)
        if len(answer) != 1:
            raise OpenAIError(502, "the model gave no answer", type="server_error")
        return Response(answer[0], media_type="application/json")

    async def _stream(
        self, request: service_pb2.PostModelOutputsRequest, metadata: Metadata
    ) -> Response:
        """Waits for the first answer, so that a call refused at once (bad key, unknown model,
        full queue) gets its HTTP status; then streams the rest."""
        responses = self._responses("GenerateModelOutputs", request, metadata)
        try:
            first = await anext(responses, None)
            if first is None:
                raise OpenAIError(502, "the model gave no answer", type="server_error")
            assert isinstance(first, service_pb2.MultiOutputResponse)
            chunks = wire.answers(first)
        except BaseException:
            await responses.aclose()
            raise
        return StreamingResponse(
            _events(chunks, responses),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def models(self, request: Request) -> Response:
        """The models the caller can call here: those of its enabled deployments."""
        try:
            base = f"{request.url.scheme}://{request.url.netloc}"
            found: dict[str, dict[str, Any]] = {}
            async for deployment in self._deployments(_metadata(request)):
                if not _disabled(deployment):
                    _add_model(found, base, deployment)
            return JSONResponse({"object": "list", "data": list(found.values())})
        except OpenAIError as error:
            return error_response(error)
        except Exception as exc:
            return error_response(_internal(exc))

    async def _deployments(self, metadata: Metadata) -> AsyncIterator[resources_pb2.Deployment]:
        page = 1
        while True:
            request = service_pb2.ListDeploymentsRequest(page=page, per_page=MAX_PER_PAGE)
            adapter = self.context.adapter
            response: Any = await adapter.serve_unary("ListDeployments", request, metadata)
            if response.status.code != wire.SC.SUCCESS:
                raise wire.from_status(response.status)
            for deployment in response.deployments:
                yield deployment
            if len(response.deployments) < MAX_PER_PAGE:
                return
            page += 1


async def _unless_disconnected(request: Request, work: Awaitable[Response]) -> Response:
    """``work``'s response, or, when the client disconnects first, ``work`` cancelled (and with
    it the item on the replica: a long unary call, or a stream still waiting for its first
    chunk). Once a stream's response has begun, Starlette watches for the disconnect."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        return await task
    return Response(status_code=499)  # nobody is there to read it


async def _disconnect(request: Request) -> None:
    """Returns when the client has gone (the body is read by then: nothing else arrives)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _disabled(deployment: resources_pb2.Deployment) -> bool:
    return bool(deployment.status == resources_pb2.Deployment.Status.DISABLED)


def _add_model(found: dict[str, dict[str, Any]], base: str, dep: resources_pb2.Deployment) -> None:
    model = dep.worker.model
    user = model.user_id or dep.user_id
    url = wire.model_url(base, user, model.app_id, model.id)
    entry = found.setdefault(
        url,
        {
            "id": url,
            "object": "model",
            "created": dep.created_at.seconds,
            "owned_by": user,
            "deployments": [],
        },
    )
    entry["deployments"].append(dep.id)


async def _events(
    first: list[str], responses: AsyncGenerator[Message, None]
) -> AsyncIterator[bytes]:
    """The SSE body: the chunks already read, those to come, then ``[DONE]``; a failure midway
    is the last event. Leaving early (the client went away) closes ``responses``, which
    cancels the item."""
    try:
        for chunk in first:
            yield _event(chunk)
        async for response in responses:
            assert isinstance(response, service_pb2.MultiOutputResponse)
            for chunk in wire.answers(response):
                yield _event(chunk)
        yield b"data: [DONE]\n\n"
    except OpenAIError as error:
        yield _event_json(error)
    except Exception as exc:
        yield _event_json(_internal(exc))
    finally:
        await responses.aclose()


def _event(chunk: str) -> bytes:
    return b"data: " + chunk.encode() + b"\n\n"


def _event_json(error: OpenAIError) -> bytes:
    return _event(json.dumps(error.body()))


def openai_routes(context: HttpContext) -> list[BaseRoute]:
    """The routes of the OpenAI-compatible API."""
    return OpenAIRoutes(context).routes()
