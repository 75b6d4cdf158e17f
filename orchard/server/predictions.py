"""``PostModelOutputs``, ``GenerateModelOutputs`` and ``StreamModelOutputs``: one code path.

Each call is checked (1 to 128 inputs), routed by its runner selector
(:func:`~orchard.dispatch.targets.resolve_target`), has its URL inputs fetched by the server
under its fetch policy, and goes to the dispatcher as one item; the responses stream back as
the replica produces them, each saying where it ran (``runner_selector``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from clarifai_grpc.grpc.api import service_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2 as SC

from orchard import errors, work_protocol
from orchard.dispatch.targets import Target, resolve_target
from orchard.server.rpc import Router, StreamCall
from orchard.services import fetch

router = Router()
MAX_INPUTS = 128
SHAPES = {
    work_protocol.UNARY: "predict",
    work_protocol.SERVER_STREAM: "generate",
    work_protocol.BIDI: "stream",
}


class UrlFetcher:
    """The server's fetcher of URL inputs: one HTTP session, one policy."""

    def __init__(self, policy: fetch.FetchPolicy) -> None:
        self.policy = policy
        self._session: aiohttp.ClientSession | None = None

    async def resolve(
        self, request: service_pb2.PostModelOutputsRequest
    ) -> service_pb2.PostModelOutputsRequest:
        if self._session is None:
            self._session = fetch.open_fetch_session()
        return await fetch.resolve_url_inputs(request, self.policy, self._session)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _checked(request: service_pb2.PostModelOutputsRequest) -> service_pb2.PostModelOutputsRequest:
    if len(request.inputs) > MAX_INPUTS:
        raise errors.InvalidRequest(
            f"{len(request.inputs)} inputs in one request; send at most {MAX_INPUTS} per call"
        )
    return request


async def _prepared(
    call: StreamCall, request: service_pb2.PostModelOutputsRequest
) -> service_pb2.PostModelOutputsRequest:
    request = _checked(request)
    if call.runtime.fetcher is not None:
        request = await call.runtime.fetcher.resolve(request)
    return request


async def _rest(
    call: StreamCall, requests: AsyncIterator[Any]
) -> AsyncIterator[service_pb2.PostModelOutputsRequest]:
    async for request in requests:
        yield await _prepared(call, request)


async def _target(call: StreamCall, request: service_pb2.PostModelOutputsRequest) -> Target:
    """Where the request goes; remembered briefly, since every call of a client asks again."""
    key = (
        "target",
        call.user_id,
        request.runner_selector.SerializeToString(),
        request.user_app_id.app_id,
        request.model_id,
        request.version_id,
    )
    target: Target | None = call.runtime.memo.get(key)
    if target is None:
        target = await call.db(lambda session: resolve_target(session, call.user_id, request))
        call.runtime.memo.put(key, target)
    return target


async def _predict(
    requests: AsyncIterator[Any], call: StreamCall, shape: int
) -> AsyncIterator[Any]:
    first = await anext(requests, None)
    if first is None:
        raise errors.InvalidRequest("the stream ended before its first request")
    target = await _target(call, first)
    started, code = time.perf_counter(), str(SC.SUCCESS)
    try:
        first = await _prepared(call, first)
        rest = _rest(call, requests) if shape == work_protocol.BIDI else None
        dispatcher = call.runtime.dispatcher
        async for response in dispatcher.call(target, shape, first, rest, call.deadline):
            if target.selector is not None:
                response.runner_selector.CopyFrom(target.selector)
            code = str(response.status.code)
            yield response
    except errors.OrchardError as exc:
        code = str(exc.code)
        raise
    except (asyncio.CancelledError, GeneratorExit):
        code = "cancelled"  # the client went away
        raise
    except Exception:
        code = str(SC.INTERNAL_UNCATEGORIZED)
        raise
    finally:
        if call.runtime.metrics is not None:
            elapsed = time.perf_counter() - started
            call.runtime.metrics.observe(target.queue, SHAPES[shape], code, elapsed)


@router.stream("PostModelOutputs")
def predict(requests: AsyncIterator[Any], call: StreamCall) -> AsyncIterator[Any]:
    return _predict(requests, call, work_protocol.UNARY)


@router.stream("GenerateModelOutputs")
def generate(requests: AsyncIterator[Any], call: StreamCall) -> AsyncIterator[Any]:
    return _predict(requests, call, work_protocol.SERVER_STREAM)


@router.stream("StreamModelOutputs")
def stream(requests: AsyncIterator[Any], call: StreamCall) -> AsyncIterator[Any]:
    return _predict(requests, call, work_protocol.BIDI)
