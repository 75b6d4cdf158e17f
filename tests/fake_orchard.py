"""A fake Orchard server for runner tests: ``ProcessRunnerItems`` only, on loopback.

It stands for the real server (the dispatcher is tested on its own), so that the runner can be
tested as the layer above the wire: each stream a runner opens shows up as a :class:`FakeStream`
through which a test reads what the runner sent and sends it runner items. It can be stopped and
started again on the same port, and it refuses a wrong PAT with UNAUTHENTICATED.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2

from orchard import wire, work_protocol
from orchard.authoring import signatures
from orchard.codec.serializers import encode_args

SC = status_code_pb2.StatusCode
PAT = "test-pat"
TIMEOUT = 20.0
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "models"


class StreamEnded(AssertionError):
    """The runner closed its side of the stream while the test expected a message."""


class FakeStream:
    """One runner's stream as the server sees it."""

    def __init__(self, metadata: dict[str, str]) -> None:
        self.metadata = metadata
        self.received: asyncio.Queue[work_protocol.Outgoing | None] = asyncio.Queue()
        self._outgoing: asyncio.Queue[work_protocol.Incoming | None] = asyncio.Queue()
        self.closed = asyncio.Event()  # the runner half-closed or the call ended

    async def send(self, *runner_items: service_pb2.RunnerItem) -> None:
        await self._outgoing.put(work_protocol.items(*runner_items))

    async def send_message(self, message: work_protocol.Incoming) -> None:
        await self._outgoing.put(message)

    def end(self) -> None:
        """End the call from the server's side."""
        self._outgoing.put_nowait(None)

    async def next(self, timeout: float = TIMEOUT) -> work_protocol.Outgoing:
        """The next message from the runner."""
        message = await asyncio.wait_for(self.received.get(), timeout)
        if message is None:
            raise StreamEnded("the runner closed the stream")
        return message

    async def until_end_of(self, item_id: str, timeout: float = TIMEOUT) -> list[Any]:
        """The outputs (MultiOutputResponses) of ``item_id`` up to its end; fails on any other
        message in between."""
        responses: list[service_pb2.MultiOutputResponse] = []
        deadline = time.monotonic() + timeout
        while True:
            message = await self.next(max(deadline - time.monotonic(), 0.01))
            assert message.runner_item_id == item_id, message
            # an end may carry the item's last output (a unary item's only one)
            responses.extend(o.multi_output_response for o in message.runner_item_outputs)
            if message.status.code == SC.RUNNER_STREAM_END:
                return responses

    async def wait_closed(self, timeout: float = TIMEOUT) -> None:
        await asyncio.wait_for(self.closed.wait(), timeout)

    async def _outgoing_messages(self) -> AsyncIterator[work_protocol.Incoming]:
        while (message := await self._outgoing.get()) is not None:
            yield message


class FakeOrchard:
    """The fake server; ``streams`` yields each stream a runner opens."""

    def __init__(self, pat: str = PAT) -> None:
        self.pat = pat
        self.port = 0
        self.streams: asyncio.Queue[FakeStream] = asyncio.Queue()
        self._server: grpc.aio.Server | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> FakeOrchard:
        """Listen (on the same port as before, after a stop)."""
        server = grpc.aio.server()
        handler = grpc.stream_stream_rpc_method_handler(
            self._process,
            request_deserializer=wire.request_class("ProcessRunnerItems").FromString,
            response_serializer=wire.response_class("ProcessRunnerItems").SerializeToString,
        )
        service = grpc.method_handlers_generic_handler(
            wire.SERVICE.full_name, {"ProcessRunnerItems": handler}
        )
        server.add_generic_rpc_handlers((service,))
        self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        await server.start()
        self._server = server
        return self

    async def stop(self) -> None:
        """Stop at once: open streams end with an error on the runner's side."""
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None

    async def next_stream(self, timeout: float = TIMEOUT) -> FakeStream:
        return await asyncio.wait_for(self.streams.get(), timeout)

    async def _process(
        self, requests: AsyncIterator[work_protocol.Outgoing], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[work_protocol.Incoming]:
        metadata = {key: str(value) for key, value in context.invocation_metadata() or ()}
        if metadata.get("authorization") != f"Key {self.pat}":
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "wrong PAT")
        stream = FakeStream(metadata)
        pump = asyncio.ensure_future(_pump(requests, stream))
        await self.streams.put(stream)
        try:
            async for message in stream._outgoing_messages():
                yield message
        finally:
            pump.cancel()
            stream.closed.set()
            stream.received.put_nowait(None)


async def _pump(requests: AsyncIterator[work_protocol.Outgoing], stream: FakeStream) -> None:
    """What the runner writes goes to ``stream.received``; when it half-closes, the call ends
    (as the real server ends it)."""
    try:
        async for message in requests:
            await stream.received.put(message)
    finally:
        stream.closed.set()
        stream.end()


# -- requests, encoded as the official typed client encodes them ------------------------------


def request(cls: type, method: str, **kwargs: Any) -> service_pb2.PostModelOutputsRequest:
    """A request calling ``cls.method`` with ``kwargs`` (all arguments)."""
    sig = {s.name: s for s in signatures(cls)}[method]
    inp = resources_pb2.Input()
    encode_args(sig.input_fields, kwargs, inp.data)
    inp.data.metadata["_method_name"] = method
    return service_pb2.PostModelOutputsRequest(inputs=[inp])


def stream_item(cls: type, method: str, **kwargs: Any) -> service_pb2.PostModelOutputsRequest:
    """A later request of a stream: only the streaming argument."""
    sig = {s.name: s for s in signatures(cls)}[method]
    fields = [f for f in sig.input_fields if f.name in kwargs]
    inp = resources_pb2.Input()
    encode_args(fields, kwargs, inp.data)
    inp.data.metadata["_method_name"] = method
    return service_pb2.PostModelOutputsRequest(inputs=[inp])


def text_of(response: service_pb2.MultiOutputResponse) -> str:
    """The one string a successful response returns."""
    assert response.status.code == SC.SUCCESS, response.status
    (output,) = response.outputs
    return str(output.data.parts[0].data.string_value)


async def eventually(
    check: Callable[[], Any], what: str, timeout: float = TIMEOUT, interval: float = 0.005
) -> Any:
    """The first truthy ``check()``, polled on the loop; fails naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)
    return result
