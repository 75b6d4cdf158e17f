"""A recorder in place of the wire for the prediction tests of the SDK and the CLI, a model to
answer through the runner's request adapter, and a fake clock."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2, status_pb2
from google.protobuf.message import Message

from orchard import wire
from orchard.authoring import ModelClass
from orchard.client.base import BaseClient
from orchard.runners.models import request_adapter

SC = status_code_pb2.StatusCode
OK = status_pb2.Status(code=SC.SUCCESS, description="Ok")


class Echo(ModelClass):
    @ModelClass.method
    def predict(self, text: str, times: int = 1) -> str:
        return text * times

    @ModelClass.method
    def generate(self, text: str) -> Iterator[str]:
        yield from text.split()

    @ModelClass.method
    def stream(self, chunks: Iterator[str], upper: bool = False) -> Iterator[str]:
        for chunk in chunks:
            yield chunk.upper() if upper else chunk

    @ModelClass.method
    def fail(self, text: str) -> str:
        raise ValueError(f"cannot take {text!r}")


class Wire:
    """Stands in for the network: records each call, answers from a script, else from the
    ``model`` behind the runner's request adapter, else with an empty success."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.scripts: dict[str, list[Any]] = {}
        self.model: ModelClass | None = None

    def script(self, rpc: str, *answers: Any) -> None:
        """The answers to the next calls of ``rpc`` in order; the last one repeats. A stream's
        answer is a list of responses."""
        self.scripts[rpc] = list(answers)

    def unary(self, rpc: str, request: Message) -> Any:
        self.calls.append((rpc, request))
        answer = self._scripted(rpc)
        if answer is None and rpc == "PostModelOutputs" and self.model is not None:
            return request_adapter.predict(self.model, request)
        return answer if answer is not None else wire.response_class(rpc)(status=OK)

    def stream(self, rpc: str, requests: Any, timeout: float | None = None) -> Iterator[Any]:
        sent = requests if isinstance(requests, Message) else list(requests)
        self.calls.append((rpc, sent))
        answer = self._scripted(rpc)
        if answer is None and self.model is not None:
            if rpc == "GenerateModelOutputs":
                return request_adapter.generate(self.model, sent)
            return request_adapter.stream(self.model, iter(sent))
        return iter(answer or [])

    def _scripted(self, rpc: str) -> Any:
        queue = self.scripts.get(rpc)
        if not queue:
            return None
        return queue.pop(0) if len(queue) > 1 else queue[0]

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def sent(self, rpc: str) -> list[Any]:
        return [request for name, request in self.calls if name == rpc]


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def install(monkeypatch: pytest.MonkeyPatch) -> Wire:
    """A :class:`Wire` in place of every client's network, knowing bob as the PAT's owner."""
    recorder = Wire()
    monkeypatch.setattr(BaseClient, "_unary", lambda self, rpc, req: recorder.unary(rpc, req))
    monkeypatch.setattr(
        BaseClient, "_stream", lambda self, rpc, reqs, timeout=None: recorder.stream(rpc, reqs)
    )
    recorder.script("GetUser", service_pb2.SingleUserResponse(status=OK, user={"id": "bob"}))
    return recorder


def response(*texts: str, code: int = SC.SUCCESS, description: str = "") -> Any:
    outputs = [resources_pb2.Output(status=OK, data={"text": {"raw": t}}) for t in texts]
    status = status_pb2.Status(code=code, description=description)
    return service_pb2.MultiOutputResponse(status=status, outputs=outputs)
