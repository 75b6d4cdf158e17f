"""Prediction calls: requests built from a template, the three call shapes, and the wait for a
model that is still deploying.

A request is a copy of the model's template (``user_app_id``, ``model_id``, ``version_id``,
``runner_selector``, ``model.model_version.output_info``) holding at most 128 inputs.

Cold starts (api-notes 6): a model scaled to zero answers ``MODEL_DEPLOYING``, ``MODEL_LOADING``
or ``MODEL_BUSY_PLEASE_RETRY`` while it comes up, and the server does not hold the call. The SDK
sends the call again with a growing backoff (about 1.8 s, x1.3 each time, at most 30 s per wait)
until ``Retry.timeout_s`` (10 minutes, as the official SDK) has passed, logging "Model is still
deploying, please wait...". For generate and stream calls only the first response is checked
for those codes; a stream sent again replays the requests its first attempt had consumed. Any
other non-success status raises its :class:`~orchard.errors.OrchardError`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2, status_pb2
from google.protobuf import json_format

from orchard import errors
from orchard.client.base import BaseClient

SC = status_code_pb2.StatusCode
Request: TypeAlias = service_pb2.PostModelOutputsRequest
Response: TypeAlias = service_pb2.MultiOutputResponse

MAX_INPUTS = 128  # inputs per request (the official SDK's MAX_MODEL_PREDICT_INPUTS)
METHOD_KEY = "_method_name"  # Input.data.metadata key naming the model method to call
RETRYABLE = frozenset({SC.MODEL_DEPLOYING, SC.MODEL_LOADING, SC.MODEL_BUSY_PLEASE_RETRY})
INPUT_TYPES = ("image", "text", "video", "audio")
WAITING = "Model is still deploying, please wait..."

log = logging.getLogger(__name__)


# -- inputs ------------------------------------------------------------------------------------


def input_from_url(url: str, input_type: str) -> resources_pb2.Input:
    """``Input(data.{image|text|video|audio}.url)``, as the official ``*_by_url`` helpers."""
    if not isinstance(url, str) or not url:
        raise errors.UserError(f"expected a non-empty URL string, got {url!r}")
    data = resources_pb2.Data()
    getattr(data, checked_input_type(input_type)).url = url
    return resources_pb2.Input(data=data)


def input_from_bytes(payload: bytes, input_type: str) -> resources_pb2.Input:
    """Text as ``data.text.raw`` (UTF-8), media as ``data.{image|video|audio}.base64``."""
    kind = checked_input_type(input_type)
    if not isinstance(payload, bytes | bytearray) or not payload:
        shown = type(payload).__name__
        raise errors.UserError(f"expected non-empty bytes, got {shown}; read the file as bytes")
    data = resources_pb2.Data()
    if kind == "text":
        data.text.raw = _utf8(bytes(payload))
    else:
        getattr(data, kind).base64 = bytes(payload)
    return resources_pb2.Input(data=data)


def _utf8(payload: bytes) -> str:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise errors.UserError(
            f"text input is not UTF-8 ({exc.reason} at byte {exc.start}); pass input_type= "
            "image, video or audio for binary data"
        ) from None


def checked_input_type(input_type: str) -> str:
    if input_type not in INPUT_TYPES:
        raise errors.UserError(f"input_type {input_type!r} is not one of {', '.join(INPUT_TYPES)}")
    return input_type


def input_type_of(model_type_id: str, model_id: str) -> str:
    """The input type a model type implies: its first word (``text-to-text`` → text,
    ``visual-classifier`` → image). Raises UserError when it implies none."""
    first = model_type_id.split("-", 1)[0]
    found = {"visual": "image"}.get(first, first)
    if found not in INPUT_TYPES:
        raise errors.UserError(
            f"cannot tell the input type of model {model_id!r} from its model type "
            f"{model_type_id or '(none)'!r}; pass input_type= one of {', '.join(INPUT_TYPES)}"
        )
    return found


def output_info(
    inference_params: Mapping[str, Any] | None, output_config: Mapping[str, Any] | None
) -> resources_pb2.OutputInfo | None:
    """``inference_params`` → ``params`` (Struct), ``output_config`` → ``OutputConfig``."""
    if not inference_params and not output_config:
        return None
    info = resources_pb2.OutputInfo()
    try:
        info.params.update(dict(inference_params or {}))
    except (TypeError, ValueError, AttributeError) as exc:
        raise errors.UserError(
            f"inference_params must be a dict of JSON values with str keys ({exc})"
        ) from None
    try:
        json_format.ParseDict(dict(output_config or {}), info.output_config)
    except (json_format.ParseError, TypeError, AttributeError) as exc:
        raise errors.UserError(
            f"output_config: {exc}; use OutputConfig fields such as min_value, max_concepts, "
            "select_concepts, sample_ms"
        ) from None
    return info


# -- waiting for a deploying model -----------------------------------------------------------


@dataclass(frozen=True)
class Retry:
    """How long to keep sending a call that a deploying model answers with a retryable code,
    and how to wait (``clock`` and ``sleep`` are injectable for tests)."""

    timeout_s: float = 600.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    max_wait_s: float = 30.0

    def waiter(self) -> Waiter:
        return Waiter(self, self.clock() + self.timeout_s)


@dataclass
class Waiter:
    """One call's wait: each :meth:`wait` sleeps the next backoff, or raises at the deadline."""

    retry: Retry
    deadline: float
    step: int = 11  # the official SDK's BackoffIterator(10) starts at 0.1 * 1.3**11 ≈ 1.8 s

    def wait(self, status: status_pb2.Status) -> None:
        left = self.deadline - self.retry.clock()
        if left <= 0:
            raise _still_deploying(status, self.retry.timeout_s)
        delay = min(0.1 * 1.3**self.step, self.retry.max_wait_s, left)
        self.step += 1
        log.info("%s (%s)", WAITING, status.description or SC.Name(status.code))
        self.retry.sleep(delay)


def _still_deploying(status: status_pb2.Status, timeout_s: float) -> errors.OrchardError:
    cls = errors.error_class_for(status.code)
    err = cls(
        f"the model is still not ready after {timeout_s:g}s "
        f"({SC.Name(status.code)}: {status.description or 'no description'}); check its "
        "deployment with `orchard deployment list`, or wait longer with retry_timeout=",
        details=status.details,
        req_id=status.req_id,
    )
    err.code = status.code
    return err


# -- responses -----------------------------------------------------------------------------------


def check_response(response: Response) -> Response:
    """``response`` when its status is SUCCESS; else raise, naming a failed output's reason."""
    if response.status.code == SC.SUCCESS:
        return response
    status = status_pb2.Status()
    status.CopyFrom(response.status)
    reason = failed_output_reason(response.outputs)
    if reason and reason not in status.description:
        status.description = f"{status.description or 'prediction failed'}: {reason}"
    raise errors.from_status(status)


def failed_output_reason(outputs: Sequence[resources_pb2.Output]) -> str:
    """The description of the first output whose own status is a failure, or ""."""
    for output in outputs:
        if output.status.code not in (0, SC.SUCCESS):
            return output.status.description or SC.Name(output.status.code)
    return ""


# -- the three call shapes ------------------------------------------------------------------------


@dataclass
class Predictor:
    """Sends prediction requests made from ``template`` through ``client``."""

    client: BaseClient
    template: Request
    retry: Retry = field(default_factory=Retry)

    def request(self, inputs: Iterable[resources_pb2.Input], method: str | None = None) -> Request:
        """A copy of the template holding ``inputs`` (at most 128), each naming ``method``."""
        request = Request()
        request.CopyFrom(self.template)
        request.inputs.extend(inputs)
        if len(request.inputs) > MAX_INPUTS:
            raise errors.UserError(
                f"too many inputs: {len(request.inputs)} (at most {MAX_INPUTS} per request); "
                "split them into batches"
            )
        if method:
            for inp in request.inputs:
                inp.data.metadata[METHOD_KEY] = method
        return request

    def predict(self, request: Request) -> Response:
        """PostModelOutputs, sent again while the model is deploying."""
        waiter = self.retry.waiter()
        while True:
            response = self.client._unary("PostModelOutputs", request)
            if response.status.code not in RETRYABLE:
                return check_response(response)
            waiter.wait(response.status)

    def generate(self, request: Request) -> Iterator[Response]:
        """GenerateModelOutputs: the responses as they arrive (sent when iterated)."""
        return self._started(lambda: self.client._stream("GenerateModelOutputs", request))

    def stream(self, requests: Iterable[Request]) -> Iterator[Response]:
        """StreamModelOutputs: ``requests`` are sent as the server takes them (from when the
        result is iterated). An error raised while making a request (by the caller's iterator,
        say) ends the requests and is raised here, not in gRPC's sending thread."""
        failures: list[Exception] = []
        replay = Replay(_guarded(requests, failures))

        def open_call() -> Iterator[Response]:
            return self.client._stream("StreamModelOutputs", replay.attempt())

        try:
            for response in self._started(open_call, replay.settle):
                _raise_first(failures)
                yield response
        except errors.OrchardError:
            _raise_first(failures)  # the request side's error explains why the call ended
            raise
        _raise_first(failures)

    def _started(
        self,
        open_call: Callable[[], Iterator[Response]],
        on_start: Callable[[], None] | None = None,
    ) -> Iterator[Response]:
        """The call's responses; it is opened again while its first response is retryable."""
        waiter = self.retry.waiter()
        while True:
            responses = open_call()
            first = next(responses, None)
            if first is None or first.status.code not in RETRYABLE:
                break
            _close(responses)
            waiter.wait(first.status)
        if on_start is not None:
            on_start()
        if first is None:
            raise errors.OrchardError(
                "the server ended the call without a response; check the server's log"
            )
        try:
            yield check_response(first)
            for response in responses:
                yield check_response(response)
        finally:
            _close(responses)


def _guarded(requests: Iterable[Request], failures: list[Exception]) -> Iterator[Request]:
    try:
        yield from requests
    except Exception as exc:
        failures.append(exc)


def _raise_first(failures: list[Exception]) -> None:
    if failures:
        raise failures[0]


def _close(responses: Iterator[Response]) -> None:
    close = getattr(responses, "close", None)
    if close is not None:
        close()


class Replay:
    """The requests of a stream, replayable until its first response.

    Each :meth:`attempt` yields the requests from the first one: those an earlier attempt
    already took from the source, then new ones. After :meth:`settle` nothing more is kept. An
    earlier attempt (a cancelled call) ends at its next request; if gRPC's thread for it is
    blocked in the source, the item it gets is kept for the live attempt. Only one thread reads
    the source at a time, and no lock is held while it waits, so the live attempt can send
    what is kept while a cancelled one still waits for the caller's next item.
    """

    _END = object()

    def __init__(self, source: Iterable[Request]) -> None:
        self._source = iter(source)
        self._lock = threading.Lock()  # guards the fields below; never held while reading
        self._reading = threading.Lock()  # one reader of the source at a time
        self._kept: list[Request] = []
        self._offset = 0  # how many requests were dropped from the front of _kept
        self._attempt = 0
        self._settled = False
        self._exhausted = False

    def attempt(self) -> Iterator[Request]:
        with self._lock:
            self._attempt += 1
            mine = self._attempt
        position = 0
        while (item := self._take(mine, position)) is not self._END:
            position += 1
            yield item

    def settle(self) -> None:
        with self._lock:
            self._settled = True

    def _take(self, mine: int, position: int) -> Any:
        while True:
            found = self._kept_item(mine, position)
            if found is not None:
                return found
            with self._reading:
                if self._missing(position):  # (another thread may have read it meanwhile)
                    self._read_one()

    def _kept_item(self, mine: int, position: int) -> Any:
        """The request at ``position``, END, or None when it must be read from the source."""
        with self._lock:
            index = position - self._offset
            if mine != self._attempt:
                return self._END
            if index >= len(self._kept):
                return self._END if self._exhausted else None
            item = self._kept[index]
            if self._settled:  # only the live attempt reads now: drop what it has passed
                del self._kept[: index + 1]
                self._offset = position + 1
            return item

    def _missing(self, position: int) -> bool:
        with self._lock:
            return position - self._offset >= len(self._kept) and not self._exhausted

    def _read_one(self) -> None:
        item = next(self._source, self._END)
        with self._lock:
            if item is self._END:
                self._exhausted = True
            else:
                self._kept.append(item)
