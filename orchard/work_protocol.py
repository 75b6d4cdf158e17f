"""The runner work protocol over ``ProcessRunnerItems`` (one bidi stream per runner replica).

The runner connects out to the server (so it can sit behind NAT, in a Ray actor or a pod) and
everything travels on that one stream. Orchard's conventions, on the messages of the public
protocol:

runner → server (``PostRunnerItemOutputsRequest``)
    hello       ``status.code = RUNNER_STREAM_START``, ``runner_id``, ``nodepool_id``,
                ``compute_cluster_id``, ``runner_replica_id``; ``status.details`` is JSON
                ``{"capacity": N}``: how many items the replica runs at once (1 to
                ``MAX_CAPACITY``). Ids are at most ``MAX_ID_CHARS`` printable characters.
    output      ``runner_item_id`` and one ``runner_item_outputs[0].multi_output_response``;
                a unary item has one, a streaming item many.
    item end    ``runner_item_id`` and ``status.code = RUNNER_STREAM_END``: the item is done
                (after its last output, or at once when it was cancelled). It may carry the
                item's last output itself: a unary item is answered in one message.
    draining    ``status.code = RUNNER_STREAM_END`` without an item id: send nothing new.
    refused     ``runner_item_id`` and ``status.code = RUNNER_NEEDS_RETRY``, the reason in
                ``status.description``: the runner did not start that item (a start that
                crossed its draining message); give it to another runner. No item end follows.

server → runner (``MultiRunnerItemResponse.runner_items``, status SUCCESS)
    start       ``RunnerItem{id, processing_info.runner_method_type, post_model_outputs_request}``
    next        ``RunnerItem{id, post_model_outputs_request}``: the next request of a
                stream-stream item.
    input end   ``RunnerItem{id, processing_info.status.code = RUNNER_STREAM_END}``: the
                client's request stream ended.
    cancel      ``RunnerItem{id, processing_info.status.code = RUNNER_ITEM_CANCELLED}``: the
                client went away or its deadline passed; the runner stops the item.
    refusal     ``MultiRunnerItemResponse{status}`` with no items and a code other than
                SUCCESS, RUNNER_STREAM_START or RUNNER_NEEDS_RETRY (a bad PAT, a bad hello, an
                unknown runner), or the call ending with gRPC UNAUTHENTICATED,
                PERMISSION_DENIED, INVALID_ARGUMENT or UNIMPLEMENTED: the runner exits instead
                of reconnecting. Any other end of the call is a break: it reconnects.

A unary call is a stream of one: every call shape is one item with one or more outputs and an
end.

The official runner (``clarifai model serve``, clarifai 12.x) speaks a variant, told apart by a
hello without a capacity in its details:

- it opens one call per item: many calls at once (one per thread), each taking one item and
  ending once that item is done. Its outputs carry ``status.code = SUCCESS`` and no item end: a
  unary item ends with its one output, any other with the call (the server ends the call with
  ``MultiRunnerItemResponse{status: RUNNER_STREAM_END}``, and only when the runner still reads
  it is the item done; a call that broke loses it).
- it opens a control call too, whose hello names runner ``control-<runner id>``; it sends
  nothing else on it and listens there for cancels (the message above) of its replica's items.
- it rejects a message from the server whose status is not SUCCESS or RUNNER_STREAM_END, which
  is why every message with items carries SUCCESS.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any, TypeAlias

from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2 as sc
from clarifai_grpc.grpc.api.status import status_pb2

UNARY = resources_pb2.RunnerMethodType.UNARY_UNARY
SERVER_STREAM = resources_pb2.RunnerMethodType.UNARY_STREAMING
BIDI = resources_pb2.RunnerMethodType.STREAMING_STREAMING
UNKNOWN = resources_pb2.RunnerMethodType.UNKNOWN
_SUCCESS = status_pb2.Status(code=sc.SUCCESS)

Outgoing: TypeAlias = service_pb2.PostRunnerItemOutputsRequest
Incoming: TypeAlias = service_pb2.MultiRunnerItemResponse
CONTROL_PREFIX = "control-"  # the official runner's control call names its runner so


@dataclass(frozen=True)
class Hello:
    runner_id: str
    nodepool_id: str
    compute_cluster_id: str
    replica_id: str
    capacity: int
    user_id: str = ""
    item_per_call: bool = False  # the official runner's variant (see above)

    @property
    def control_of(self) -> str:
        """The runner whose control call this is ("": not a control call)."""
        if self.runner_id.startswith(CONTROL_PREFIX):
            return self.runner_id.removeprefix(CONTROL_PREFIX)
        return ""


def hello(h: Hello) -> Outgoing:
    return Outgoing(
        user_app_id=resources_pb2.UserAppIDSet(user_id=h.user_id),
        runner_id=h.runner_id,
        nodepool_id=h.nodepool_id,
        compute_cluster_id=h.compute_cluster_id,
        runner_replica_id=h.replica_id,
        status=status_pb2.Status(
            code=sc.RUNNER_STREAM_START, details=json.dumps({"capacity": h.capacity})
        ),
    )


MAX_CAPACITY = 1024  # items one replica may run at once (num_threads' bound in config.yaml)
MAX_ID_CHARS = 256  # the ids a hello names


def read_hello(message: Outgoing) -> Hello:
    """The hello a runner opened its stream with; ValueError, with the reason and what a
    hello must hold, when it is not one (the server refuses the stream in-band with it)."""
    if message.status.code != sc.RUNNER_STREAM_START:
        raise ValueError("open the stream with status RUNNER_STREAM_START")
    stated = _details(message.status.details)
    capacity = _capacity(stated)
    if not message.runner_id:
        raise ValueError("the hello needs runner_id")
    for name in ("runner_id", "runner_replica_id", "nodepool_id", "compute_cluster_id"):
        _check_id(name, getattr(message, name))
    _check_id("user_app_id.user_id", message.user_app_id.user_id)
    return Hello(
        message.runner_id,
        message.nodepool_id,
        message.compute_cluster_id,
        message.runner_replica_id,
        capacity,
        message.user_app_id.user_id,
        item_per_call="capacity" not in stated,
    )


DETAILS_SHAPE = f'status.details must be JSON like {{"capacity": 4}} (1 to {MAX_CAPACITY})'


def _details(details: str) -> dict[str, Any]:
    """A hello's ``status.details``: a JSON object (empty when it says nothing)."""
    try:
        stated = json.loads(details or "{}")
    except (ValueError, RecursionError):
        raise ValueError(DETAILS_SHAPE) from None
    if not isinstance(stated, dict):
        raise ValueError(DETAILS_SHAPE)
    return stated


def _capacity(stated: dict[str, Any]) -> int:
    """The capacity a hello states (1 when it names none)."""
    shape = DETAILS_SHAPE
    value = stated.get("capacity", 1)
    whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole:
        raise ValueError(f"capacity {_shown(value)} is not a whole number; {shape}")
    if not 1 <= value <= MAX_CAPACITY:
        raise ValueError(f"capacity {_shown(value)} is out of range; {shape}")
    return int(value)


def _check_id(name: str, value: str) -> None:
    if len(value) > MAX_ID_CHARS or not value.isprintable():
        raise ValueError(
            f"the hello's {name} must be at most {MAX_ID_CHARS} printable characters "
            f"({len(value)} given)"
        )


def _shown(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:40] + "..."


def output(item_id: str, response: service_pb2.MultiOutputResponse) -> Outgoing:
    return Outgoing(
        runner_item_id=item_id,
        runner_item_outputs=[service_pb2.RunnerItemOutput(multi_output_response=response)],
    )


def item_end(item_id: str, last: service_pb2.MultiOutputResponse | None = None) -> Outgoing:
    """The item's end; with ``last``, its last output travels in the same message (a unary
    item's only output, so that it costs one message)."""
    message = Outgoing(runner_item_id=item_id, status=status_pb2.Status(code=sc.RUNNER_STREAM_END))
    if last is not None:
        message.runner_item_outputs.add(multi_output_response=last)
    return message


def draining() -> Outgoing:
    return Outgoing(status=status_pb2.Status(code=sc.RUNNER_STREAM_END))


def start(
    item_id: str, shape: int, request: service_pb2.PostModelOutputsRequest
) -> service_pb2.RunnerItem:
    return service_pb2.RunnerItem(
        id=item_id,
        processing_info=resources_pb2.ProcessingInfo(runner_method_type=shape),
        post_model_outputs_request=request,
    )


def next_request(
    item_id: str, request: service_pb2.PostModelOutputsRequest
) -> service_pb2.RunnerItem:
    return service_pb2.RunnerItem(id=item_id, post_model_outputs_request=request)


def control(item_id: str, code: int) -> service_pb2.RunnerItem:
    """An input end (RUNNER_STREAM_END) or a cancel (RUNNER_ITEM_CANCELLED) for an item."""
    return service_pb2.RunnerItem(
        id=item_id,
        processing_info=resources_pb2.ProcessingInfo(status=status_pb2.Status(code=code)),
    )


def items(*runner_items: service_pb2.RunnerItem) -> Incoming:
    return Incoming(runner_items=list(runner_items), status=_SUCCESS)


def call_end() -> Incoming:
    """The server's last message on an official runner's item call (see above)."""
    return Incoming(status=status_pb2.Status(code=sc.RUNNER_STREAM_END))


def refused(item_id: str, reason: str) -> Outgoing:
    return Outgoing(
        runner_item_id=item_id,
        status=status_pb2.Status(code=sc.RUNNER_NEEDS_RETRY, description=reason),
    )


class ItemKind(enum.Enum):
    START = "start"
    NEXT = "next"
    INPUT_END = "input end"
    CANCEL = "cancel"
    OTHER = "other"


def kind_of(item: service_pb2.RunnerItem) -> ItemKind:
    """Which of the server's messages a runner item is (OTHER: none Orchard sends)."""
    code = item.processing_info.status.code
    if code == sc.RUNNER_ITEM_CANCELLED:
        return ItemKind.CANCEL
    if code == sc.RUNNER_STREAM_END:
        return ItemKind.INPUT_END
    if not item.HasField("post_model_outputs_request"):
        return ItemKind.OTHER
    if item.processing_info.runner_method_type != UNKNOWN:
        return ItemKind.START
    return ItemKind.NEXT


_NOT_REFUSALS = frozenset({sc.ZERO, sc.SUCCESS, sc.RUNNER_STREAM_START, sc.RUNNER_NEEDS_RETRY})


def refusal(message: Incoming) -> str | None:
    """The server's reason for refusing the runner's stream, when ``message`` is a refusal."""
    if message.runner_items or message.status.code in _NOT_REFUSALS:
        return None
    status = message.status
    return status.description or status.details or f"status code {status.code}"
