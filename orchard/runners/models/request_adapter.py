"""The request adapter a runner calls: V2 requests in, V2 responses out; no network, no raise.

=====================  ===========================  =====================================
V2 method              sync (a worker thread)       async (on the runner's event loop)
=====================  ===========================  =====================================
PostModelOutputs       ``predict(model, req)``      ``await apredict(model, req)``
GenerateModelOutputs   ``generate(model, req)``     ``async for r in agenerate(model, req)``
StreamModelOutputs     ``stream(model, reqs)``      ``async for r in astream(model, reqs)``
=====================  ===========================  =====================================

Routing. The method is ``inputs[0].data.metadata['_method_name']`` (the official typed client
sets it on every input); without it, the method named like the entry point (``predict``,
``generate``, ``stream``), else the model's only method of that shape. ``predict`` serves
UNARY_UNARY methods, ``generate`` UNARY_STREAMING ones (and UNARY_UNARY ones, as a stream of
one), ``stream`` STREAMING_STREAMING ones. ``_GET_SIGNATURES`` through ``predict`` answers the
signatures JSON in ``outputs[0].data.text.raw``.

Inputs. Several inputs in one ``predict`` request are a batch: the method is called once per
input, in order, and each gets its own output. A batched method (``@ModelClass.method(
batch_size=N)``) is called with up to N inputs at once instead: with the runner's queue
(``batchers``, :mod:`orchard.runners.batching`), together with other requests' inputs; without
it, N at a time of the request's own. ``generate`` and ``stream`` take exactly one input per
request (as the official runtime does). In a stream, the first request carries every
argument and the first item of the streaming one; each later request carries the next item.
Arguments come from the input's parts (or its old-format payload, see
:mod:`orchard.runners.utils.legacy`), then from inference params
(``model.model_version.output_info.params``) with the same names, then from defaults.

Sync or async. Both forms serve every model. The async forms await ``async def`` methods on the
running loop and run plain methods in worker threads (``asyncio.to_thread``; a sync generator
is advanced one item per thread hop, and closed when its consumer stops; cancelled mid-step, it
is closed once that step returns, see :mod:`orchard.runners.threads`). The sync forms call
plain methods directly and run ``async def`` methods on a private event loop; called on a thread
with a running loop they answer a FAILURE telling the runner to use the async form.

Errors never escape. A method that raises fails its output (FAILURE, the exception's type and
message in ``description``, the message in ``details``; the traceback goes to the
``orchard.runners`` log only). The top-level status is SUCCESS, MIXED_STATUS or FAILURE. A
request that cannot be served (unknown method, wrong call shape, bad arguments to a stream)
fails on top and on every output. A generate or stream that fails midway ends with one FAILURE
response.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from typing import Any

from clarifai_grpc.grpc.api import resources_pb2

from orchard.runners import batching
from orchard.runners.models import calls
from orchard.runners.models.calls import ArgumentError, Call, CallError, Request, Response
from orchard.runners.models.model_class import (
    MethodInfo,
    MethodType,
    ModelClass,
    begin_output_context,
)
from orchard.runners.threads import iterate_in_threads

__all__ = ["agenerate", "apredict", "astream", "generate", "predict", "stream"]

_END = object()


# -- PostModelOutputs ---------------------------------------------------------------------------


def predict(model: ModelClass, request: Request) -> Response:
    """Serve a unary request; one output per input."""
    routed = _route_unary(type(model), request)
    if not isinstance(routed, MethodInfo):
        return routed
    if routed.is_async:
        return _run_on_private_loop(apredict(model, request), "apredict")
    params = calls.inference_params(request)
    if routed.batch is not None:
        return calls.unary_response(batching.predict_inputs(model, routed, request.inputs, params))
    return calls.unary_response([_predict_one(model, routed, i, params) for i in request.inputs])


async def apredict(
    model: ModelClass, request: Request, batchers: batching.ModelBatchers | None = None
) -> Response:
    """:func:`predict` for an event loop; a batched method's inputs join ``batchers``."""
    routed = _route_unary(type(model), request)
    if not isinstance(routed, MethodInfo):
        return routed
    params = calls.inference_params(request)
    if routed.batch is not None:
        outputs = await batching.apredict_inputs(model, routed, request.inputs, params, batchers)
        return calls.unary_response(outputs)
    outputs = [await _apredict_one(model, routed, i, params) for i in request.inputs]
    return calls.unary_response(outputs)


def _route_unary(cls: type[ModelClass], request: Request) -> MethodInfo | Response:
    if calls.wants_signatures(request):
        return calls.signatures_response(cls)
    if not request.inputs:
        return calls.failed_response("the request has no inputs; send one input per call")
    try:
        return calls.select_method(cls, request, "predict")
    except CallError as exc:
        return calls.failed_response(str(exc), len(request.inputs))


def _predict_one(
    model: ModelClass, info: MethodInfo, inp: resources_pb2.Input, params: dict[str, Any]
) -> resources_pb2.Output:
    cls = type(model)
    try:
        call = calls.decode_input(info, inp, params)
    except ArgumentError as exc:
        return calls.argument_failure(cls, info, exc)
    begin_output_context()
    try:
        value = getattr(model, info.name)(**call.kwargs)
    except Exception as exc:
        return calls.method_failure(cls, info, exc)
    return calls.value_output(cls, info, value, call.legacy)


async def _apredict_one(
    model: ModelClass, info: MethodInfo, inp: resources_pb2.Input, params: dict[str, Any]
) -> resources_pb2.Output:
    cls = type(model)
    try:
        call = calls.decode_input(info, inp, params)
    except ArgumentError as exc:
        return calls.argument_failure(cls, info, exc)
    begin_output_context()
    try:
        value = await _acall(model, info, call.kwargs)
    except Exception as exc:
        return calls.method_failure(cls, info, exc)
    return calls.value_output(cls, info, value, call.legacy)


# -- GenerateModelOutputs -----------------------------------------------------------------------


def generate(model: ModelClass, request: Request) -> Iterator[Response]:
    """Serve a server-streaming request: one response (with one output) per result."""
    try:
        info, call = _prepare_single(type(model), request, "generate")
    except CallError as exc:
        yield calls.failed_response(str(exc))
        return
    if info.is_async:
        yield from _iterate_on_private_loop(agenerate(model, request), "agenerate")
        return
    if info.batch is not None:
        yield calls.unary_response(batching.predict_calls(model, info, [call]))
        return
    begin_output_context()
    yield from _sync_responses(model, info, call.legacy, lambda: _call(model, info, call.kwargs))


async def agenerate(
    model: ModelClass, request: Request, batchers: batching.ModelBatchers | None = None
) -> AsyncIterator[Response]:
    """:func:`generate` for an event loop; a batched method's input joins ``batchers``."""
    try:
        info, call = _prepare_single(type(model), request, "generate")
    except CallError as exc:
        yield calls.failed_response(str(exc))
        return
    if info.batch is not None:
        yield calls.unary_response(await batching.apredict_calls(model, info, [call], batchers))
        return
    begin_output_context()
    async for response in _async_responses(model, info, call.legacy, call.kwargs):
        yield response


def _prepare_single(
    cls: type[ModelClass], request: Request, entry: calls.Entry
) -> tuple[MethodInfo, Call]:
    inp = calls.only_input(request, entry)
    info = calls.select_method(cls, request, entry)
    try:
        return info, calls.decode_input(info, inp, calls.inference_params(request))
    except ArgumentError as exc:
        raise CallError(f"bad arguments for {cls.__name__}.{info.name}: {exc}") from None


# -- StreamModelOutputs -------------------------------------------------------------------------


def stream(model: ModelClass, requests: Iterable[Request]) -> Iterator[Response]:
    """Serve a bidirectional stream: the first request holds every argument."""
    later = iter(requests)
    first = next(later, None)
    if first is None:
        return
    try:
        info, call = _prepare_single(type(model), first, "stream")
    except CallError as exc:
        yield calls.failed_response(str(exc))
        return
    if info.is_async:
        yield from _iterate_on_private_loop(astream(model, _chain(first, later)), "astream")
        return
    kwargs = _with_stream(info, call, lambda first_item: _items(info, first_item, later))
    begin_output_context()
    yield from _sync_responses(model, info, call.legacy, lambda: _call(model, info, kwargs))


async def astream(model: ModelClass, requests: AsyncIterable[Request]) -> AsyncIterator[Response]:
    """:func:`stream` for an event loop."""
    later = aiter(requests)
    first = await anext(later, None)
    if first is None:
        return
    try:
        info, call = _prepare_single(type(model), first, "stream")
    except CallError as exc:
        yield calls.failed_response(str(exc))
        return
    if info.is_async:
        kwargs = _with_stream(info, call, lambda item: _aitems(info, item, later))
    else:
        loop = asyncio.get_running_loop()
        kwargs = _with_stream(info, call, lambda item: _blocking_items(info, item, later, loop))
    begin_output_context()
    async for response in _async_responses(model, info, call.legacy, kwargs):
        yield response


def _with_stream(info: MethodInfo, call: Call, items: Callable[[Any], Any]) -> dict[str, Any]:
    """The call's kwargs with the stream argument replaced by an iterator of all its items."""
    spec = info.stream_arg
    assert spec is not None
    return {**call.kwargs, spec.name: items(call.kwargs[spec.name])}


def _items(info: MethodInfo, first: Any, later: Iterator[Request]) -> Iterator[Any]:
    yield first
    for index, request in enumerate(later, start=1):
        yield calls.decode_stream_item(info, request, index)


async def _aitems(
    info: MethodInfo, first: Any, later: AsyncIterator[Request]
) -> AsyncIterator[Any]:
    yield first
    index = 1
    async for request in later:
        yield calls.decode_stream_item(info, request, index)
        index += 1


def _blocking_items(
    info: MethodInfo, first: Any, later: AsyncIterator[Request], loop: asyncio.AbstractEventLoop
) -> Iterator[Any]:
    """For a sync method in a worker thread: each item fetched on the loop, waited for here."""
    yield first
    index = 1
    while (request := asyncio.run_coroutine_threadsafe(_next(later), loop).result()) is not _END:
        yield calls.decode_stream_item(info, request, index)
        index += 1


async def _chain(first: Request, later: Iterator[Request]) -> AsyncIterator[Request]:
    yield first
    for request in later:
        yield request


# -- calling the method and turning its results into responses ---------------------------------


def _call(model: ModelClass, info: MethodInfo, kwargs: dict[str, Any]) -> Any:
    return getattr(model, info.name)(**kwargs)


async def _acall(model: ModelClass, info: MethodInfo, kwargs: dict[str, Any]) -> Any:
    method = getattr(model, info.name)
    if not info.is_async:
        return await asyncio.to_thread(method, **kwargs)
    result = method(**kwargs)
    return await result if inspect.isawaitable(result) else result


def _sync_responses(
    model: ModelClass, info: MethodInfo, legacy: bool, start: Callable[[], Any]
) -> Iterator[Response]:
    cls = type(model)
    try:
        items = _results(info, start())
    except Exception as exc:
        yield _one(calls.method_failure(cls, info, exc))
        return
    try:
        while (value := _step(items)) is not _END:
            if isinstance(value, _Raised):
                yield _one(calls.method_failure(cls, info, value.exc))
                return
            output = calls.value_output(cls, info, value, legacy)
            yield _one(output)
            if output.status.code != calls.SC.SUCCESS:
                return
    finally:
        _close(items)


async def _async_responses(
    model: ModelClass, info: MethodInfo, legacy: bool, kwargs: dict[str, Any]
) -> AsyncIterator[Response]:
    cls = type(model)
    try:
        items = _aresults(info, await _acall(model, info, kwargs))
    except Exception as exc:
        yield _one(calls.method_failure(cls, info, exc))
        return
    try:
        while (value := await _astep(items)) is not _END:
            if isinstance(value, _Raised):
                yield _one(calls.method_failure(cls, info, value.exc))
                return
            output = calls.value_output(cls, info, value, legacy)
            yield _one(output)
            if output.status.code != calls.SC.SUCCESS:
                return
    finally:
        await _aclose(items)


class _Raised:
    """The exception the method raised while producing its next result."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc


def _results(info: MethodInfo, result: Any) -> Iterator[Any]:
    if info.method_type == MethodType.UNARY_UNARY:
        return iter([result])
    return iter(_streamed(info, result))


def _aresults(info: MethodInfo, result: Any) -> AsyncIterator[Any]:
    if info.method_type == MethodType.UNARY_UNARY:
        return _just(result)
    if hasattr(result, "__anext__"):
        return result
    return iterate_in_threads(iter(_streamed(info, result)))


def _streamed(info: MethodInfo, result: Any) -> Iterable[Any]:
    if isinstance(result, str | bytes) or not hasattr(result, "__iter__"):
        raise TypeError(
            f"method {info.name!r} returned {type(result).__name__} but is annotated to return "
            "a stream; yield each result"
        )
    return result


def _step(items: Iterator[Any]) -> Any:
    try:
        return next(items, _END)
    except Exception as exc:
        return _Raised(exc)


async def _astep(items: AsyncIterator[Any]) -> Any:
    try:
        return await anext(items, _END)
    except Exception as exc:
        return _Raised(exc)


async def _just(value: Any) -> AsyncIterator[Any]:
    yield value


async def _next(items: AsyncIterator[Any]) -> Any:
    return await anext(items, _END)


def _close(items: Any) -> None:
    close = getattr(items, "close", None)
    if close is not None:
        close()


async def _aclose(items: Any) -> None:
    close = getattr(items, "aclose", None)
    if close is not None:
        await close()


def _one(output: resources_pb2.Output) -> Response:
    return calls.unary_response([output])


# -- async methods behind the sync entry points -------------------------------------------------


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _loop_refusal(async_twin: str) -> Response:
    return calls.failed_response(
        f"the model method is async and this thread runs an event loop; call "
        f"orchard.runners.models.request_adapter.{async_twin} instead"
    )


def _run_on_private_loop(coro: Any, async_twin: str) -> Response:
    if _in_event_loop():
        coro.close()
        return _loop_refusal(async_twin)
    return asyncio.run(coro)


def _iterate_on_private_loop(
    responses: AsyncIterator[Response], async_twin: str
) -> Iterator[Response]:
    """Drive an async generator from sync code, every step in one event loop and one context
    (so token counts the model sets carry from step to step)."""
    if _in_event_loop():
        yield _loop_refusal(async_twin)
        return
    loop = asyncio.new_event_loop()
    context = contextvars.copy_context()
    try:
        while True:
            step = loop.create_task(_next(responses), context=context)
            response = loop.run_until_complete(step)
            if response is _END:
                return
            yield response
    finally:
        loop.run_until_complete(_aclose(responses))
        loop.close()
