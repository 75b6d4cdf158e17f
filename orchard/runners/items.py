"""One runner item: the model call of its shape, each response sent as an output naming it.

The item end is not sent here: the session sends it however the item ended (done, failed or
cancelled), see :mod:`orchard.runners.work_stream`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from orchard import work_protocol
from orchard.runners.adapters import ModelAdapter
from orchard.runners.models import calls
from orchard.runners.models.calls import SC, Entry, Request, Response
from orchard.runners.threads import closing

ENTRIES: dict[int, Entry] = {
    work_protocol.UNARY: "predict",
    work_protocol.SERVER_STREAM: "generate",
    work_protocol.BIDI: "stream",
}

Send = Callable[[work_protocol.Outgoing], Awaitable[None]]


class RequestFeed:
    """The requests of a stream-stream item as an async iterator: the first, each ``next``
    that the server sends, then the end (``input end``, or the item was cancelled)."""

    def __init__(self, first: Request) -> None:
        self._queue: asyncio.Queue[Request | None] = asyncio.Queue()
        self._queue.put_nowait(first)
        self._ended = False

    def put(self, request: Request) -> None:
        if not self._ended:
            self._queue.put_nowait(request)

    def end(self) -> None:
        if not self._ended:
            self._ended = True
            self._queue.put_nowait(None)

    def __aiter__(self) -> RequestFeed:
        return self

    async def __anext__(self) -> Request:
        request = await self._queue.get()
        if request is None:
            self._queue.put_nowait(None)  # every later read sees the end too
            raise StopAsyncIteration
        return request


@dataclass(eq=False)
class RunningItem:
    """An item the server gave this runner."""

    id: str
    shape: int
    request: Request
    feed: RequestFeed | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    ending: bool = False  # its end is being sent
    # A unary item's one response waits here to travel with the item end (one message).
    final: Response | None = field(default=None, repr=False)

    @classmethod
    def start(cls, item_id: str, shape: int, request: Request) -> RunningItem:
        feed = RequestFeed(request) if shape == work_protocol.BIDI else None
        return cls(item_id, shape, request, feed)

    @property
    def entry(self) -> Entry:
        return ENTRIES.get(self.shape, "predict")


async def run_item(item: RunningItem, model: ModelAdapter, send: Send, max_bytes: int) -> str:
    """Call the model for ``item`` and ``send`` each response as it comes (a unary item's one
    response is kept in ``item.final`` instead, to go out with the item end); the outcome is
    ``ok``, ``mixed`` or ``failed`` (any failed response). A response over ``max_bytes`` is
    replaced by a FAILURE saying so and ends the item. Cancellation propagates, after the
    model's generator (if any) was closed."""
    outcome = _Outcome()
    if item.shape == work_protocol.UNARY:  # one response, kept for the item end: no stream needed
        item.final = fit(await model.predict(item.request), max_bytes)
        outcome.add(item.final)
        return outcome.word
    stream = responses(item, model)
    async with closing(stream):
        async for response in stream:
            fitted = fit(response, max_bytes)
            outcome.add(fitted)
            await send(work_protocol.output(item.id, fitted))
            if fitted is not response:
                break
    return outcome.word


async def responses(item: RunningItem, model: ModelAdapter) -> AsyncIterator[Response]:
    """The model's responses to ``item``, by its call shape."""
    if item.shape == work_protocol.UNARY:
        yield await model.predict(item.request)
        return
    if item.shape == work_protocol.SERVER_STREAM:
        produced = model.generate(item.request)
    elif item.feed is not None:
        produced = model.stream(item.feed)
    else:
        yield calls.failed_response(
            f"runner method type {item.shape} is not served; Orchard runners serve "
            "UNARY_UNARY, UNARY_STREAMING and STREAMING_STREAMING items"
        )
        return
    async with closing(produced):
        async for response in produced:
            yield response


ENVELOPE_BYTES = 256  # room for the item id and status around an output in its message


def fit(response: Response, max_bytes: int) -> Response:
    """``response``, or a FAILURE in its place when the message carrying it (the output and
    ``ENVELOPE_BYTES``) would be larger than ``max_bytes``: the server refuses a message over
    its limit by ending the stream, and with it every item the replica holds."""
    size = response.ByteSize()
    if size + ENVELOPE_BYTES <= max_bytes:
        return response
    return calls.failed_response(
        f"the model's output is {size} bytes, over the runner's limit of {max_bytes} bytes; "
        "return less per call, or stream it in smaller pieces",
        len(response.outputs),
    )


class _Outcome:
    def __init__(self) -> None:
        self.codes: set[int] = set()

    def add(self, response: Response) -> None:
        self.codes.add(response.status.code)

    @property
    def word(self) -> str:
        if self.codes - {SC.SUCCESS, SC.MIXED_STATUS}:
            return "failed"
        return "mixed" if SC.MIXED_STATUS in self.codes else "ok"
