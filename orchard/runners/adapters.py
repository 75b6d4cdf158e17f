"""The model as a runner sees it: the three call shapes in async form, whoever wrote the class.

- an Orchard :class:`~orchard.runners.models.model_class.ModelClass` goes through the request
  adapter's async forms (:mod:`orchard.runners.models.request_adapter`): ``async def`` methods
  run on the loop, plain ones in worker threads; the inputs of a batched method join the adapter's
  queue for that method (:mod:`orchard.runners.batching`), shared by every request;
- a class built on the official ``clarifai`` ModelClass (when that package is installed in the
  model's environment) goes through its own ``predict_wrapper(request)``,
  ``generate_wrapper(request)`` and ``stream_wrapper(request_iterator)``, which are blocking:
  they run in worker threads, and the top-level status of each response is recomputed from its
  outputs as the official runner does.

Contract of every adapter: model errors come back as FAILURE responses, never as exceptions;
closing a returned iterator (``aclose``) stops the model's generator.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

from clarifai_grpc.grpc.api.status import status_code_pb2

from orchard.runners.batching import ModelBatchers
from orchard.runners.models import calls, request_adapter
from orchard.runners.models.calls import Entry, Request, Response
from orchard.runners.models.loading import is_official
from orchard.runners.models.model_class import ModelClass
from orchard.runners.threads import blocking_iterator, closing, iterate_in_threads

SC = status_code_pb2  # its values as module constants (the enum wrapper resolves each one slowly)


class ModelAdapter(abc.ABC):
    """One loaded model instance, served in the three call shapes."""

    kind = ""  # whose ModelClass, for logs

    def __init__(self, model: Any) -> None:
        self.model = model

    @abc.abstractmethod
    def method_name(self, request: Request, entry: Entry) -> str:
        """The model method ``request`` calls through ``entry`` (for logs; never raises)."""

    @abc.abstractmethod
    async def predict(self, request: Request) -> Response:
        """A unary call: one response."""

    @abc.abstractmethod
    def generate(self, request: Request) -> AsyncIterator[Response]:
        """A server-streaming call: one response per result."""

    @abc.abstractmethod
    def stream(self, requests: AsyncIterator[Request]) -> AsyncIterator[Response]:
        """A bidirectional call: the first request holds every argument."""


class OrchardAdapter(ModelAdapter):
    """A model written against Orchard's ModelClass."""

    kind = "Orchard ModelClass"
    model: ModelClass

    def __init__(self, model: ModelClass, batchers: ModelBatchers | None = None) -> None:
        super().__init__(model)
        self.batchers = batchers if batchers is not None else ModelBatchers(model)

    def method_name(self, request: Request, entry: Entry) -> str:
        try:
            return calls.select_method(type(self.model), request, entry).name
        except calls.CallError:
            return calls.requested_name(request) or entry

    async def predict(self, request: Request) -> Response:
        return await request_adapter.apredict(self.model, request, self.batchers)

    def generate(self, request: Request) -> AsyncIterator[Response]:
        return request_adapter.agenerate(self.model, request, self.batchers)

    def stream(self, requests: AsyncIterator[Request]) -> AsyncIterator[Response]:
        return request_adapter.astream(self.model, requests)


class OfficialAdapter(ModelAdapter):
    """A model written against the official SDK's ModelClass, served by its own wrappers."""

    kind = "official clarifai ModelClass"

    def method_name(self, request: Request, entry: Entry) -> str:
        return calls.requested_name(request) or entry

    async def predict(self, request: Request) -> Response:
        return overall_status(await asyncio.to_thread(self.model.predict_wrapper, request))

    def generate(self, request: Request) -> AsyncIterator[Response]:
        return _in_threads(self.model.generate_wrapper(request))

    def stream(self, requests: AsyncIterator[Request]) -> AsyncIterator[Response]:
        blocking = blocking_iterator(requests, asyncio.get_running_loop())
        return _in_threads(self.model.stream_wrapper(blocking))


async def _in_threads(responses: Iterator[Response]) -> AsyncIterator[Response]:
    stepped = iterate_in_threads(responses)
    async with closing(stepped):
        async for response in stepped:
            yield overall_status(response)


def overall_status(response: Response) -> Response:
    """A response whose top-level status says SUCCESS (or nothing) gets the status its outputs
    add up to: SUCCESS, MIXED_STATUS or FAILURE. Any other status is kept."""
    if response.status.code not in (SC.ZERO, SC.SUCCESS) or not response.outputs:
        return response
    ok = sum(1 for output in response.outputs if output.status.code == SC.SUCCESS)
    if ok == len(response.outputs):
        code, description = SC.SUCCESS, "Ok"
    elif ok:
        code, description = SC.MIXED_STATUS, "Mixed status"
    else:
        code, description = SC.FAILURE, "Failed"
    response.status.Clear()
    response.status.code, response.status.description = code, description
    return response


def adapter_for(model: Any) -> ModelAdapter:
    """The adapter for a model instance (Orchard's or the official SDK's ModelClass)."""
    if is_official(type(model)):
        return OfficialAdapter(model)
    if isinstance(model, ModelClass):
        return OrchardAdapter(model)
    raise TypeError(f"{type(model).__name__} is not a ModelClass subclass")
