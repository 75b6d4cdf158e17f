"""The order in which waiting calls get replica slots: first come, first served.

In-process, without sockets or a server: replicas are ``ConnectedReplica`` records whose
messages are kept, calls are tasks on :meth:`Dispatcher.call`, and the test ends items itself.
Nothing waits on real time: ``settle`` only lets the event loop run the tasks that are ready.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from clarifai_grpc.grpc.api import resources_pb2 as r
from clarifai_grpc.grpc.api import service_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2 as sc

from orchard import work_protocol
from orchard.dispatch.dispatcher import Dispatcher, DispatchSettings
from orchard.dispatch.replicas import ConnectedReplica
from orchard.dispatch.targets import Target
from orchard.ids import PoolKey, VersionRef

VERSION = VersionRef("u", "app", "m", "v1")
P1, P2 = PoolKey("u", "cc", "np1"), PoolKey("u", "cc", "np2")


def target(queue: str, *pools: PoolKey) -> Target:
    return Target(f"deployment {queue!r}", queue, VERSION, tuple((p, 0) for p in pools))


X, Y, Z = target("x", P1), target("y", P1), target("z", P2)  # x and y share P1's replicas


async def settle(done: Callable[[], bool], turns: int = 200) -> None:
    """Let ready tasks run until ``done`` (``turns`` loop iterations at most, no real time)."""
    for _ in range(turns):
        if done():
            return
        await asyncio.sleep(0)  # one turn of the loop: the tasks that are ready run
    raise AssertionError("the tasks never got there")


class Replica:
    """A connected replica that keeps what the dispatcher sends it."""

    def __init__(self, dispatcher: Dispatcher, pool: PoolKey, capacity: int = 1) -> None:
        self.dispatcher = dispatcher
        self.sent: list[service_pb2.RunnerItem] = []
        hello = work_protocol.Hello("runner", pool.nodepool_id, "cc", f"replica-{pool}", capacity)
        self.replica = ConnectedReplica(
            hello, pool, VERSION, deliver=lambda m: self.sent.extend(m.runner_items)
        )

    def _starts(self) -> dict[str, str]:
        """The calls it was given, in order: text to item id."""
        return {
            item.post_model_outputs_request.inputs[0].data.text.raw: item.id
            for item in self.sent
            if work_protocol.kind_of(item) == work_protocol.ItemKind.START
        }

    def started(self) -> list[str]:
        return list(self._starts())

    async def finish(self, text: str) -> None:
        """Answer call ``text`` (its slot frees)."""
        item_id = self._starts()[text]
        answer = service_pb2.MultiOutputResponse(status={"code": sc.SUCCESS})
        await self.dispatcher.received(self.replica, work_protocol.item_end(item_id, answer))


class Calls:
    """Calls sent through the dispatcher, each a task, named by their text."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.tasks: dict[str, asyncio.Task[list[service_pb2.MultiOutputResponse]]] = {}

    def send(self, text: str, to: Target) -> None:
        request = service_pb2.PostModelOutputsRequest(
            inputs=[r.Input(data=r.Data(text=r.Text(raw=text)))]
        )
        responses = self.dispatcher.call(
            to, work_protocol.UNARY, request, None, time.monotonic() + 60
        )
        self.tasks[text] = asyncio.create_task(_collect(responses))

    def waiting(self) -> int:
        return sum(self.dispatcher.load([pool], VERSION)[1] for pool in (P1, P2))

    async def close(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)


async def _collect(responses) -> list[service_pb2.MultiOutputResponse]:
    return [response async for response in responses]


@pytest.fixture
async def world():
    dispatcher = Dispatcher(DispatchSettings(hold_seconds=60))
    calls = Calls(dispatcher)
    yield dispatcher, calls
    await calls.close()


# Each row: the calls, in the order they arrive (text, target), while one replica of one slot on
# P1 is busy with "first"; then "first" ends and, in the same step, "late" arrives for x. The
# slots then go, one end after another, in this order.
ORDER_TABLE = [
    ([("b", X), ("c", X), ("d", X)], ["first", "b", "c", "d", "late"]),
    ([("b", X), ("c", Y), ("d", X), ("e", Y)], ["first", "b", "c", "d", "e", "late"]),
    ([("b", Y)], ["first", "b", "late"]),
]


@pytest.mark.parametrize(("arrivals", "order"), ORDER_TABLE)
async def test_waiting_calls_are_served_in_arrival_order(world, arrivals, order):
    dispatcher, calls = world
    replica = Replica(dispatcher, P1)
    await dispatcher.connect(replica.replica)
    calls.send("first", X)
    await settle(lambda: replica.started() == ["first"])
    for waiting, (text, to) in enumerate(arrivals, start=1):
        calls.send(text, to)
        await settle(lambda waiting=waiting: calls.waiting() == waiting)
    await replica.finish("first")
    calls.send("late", X)  # arrives as the slot frees: it may not take it
    for served, text in enumerate(order[1:], start=2):
        await settle(lambda served=served: len(replica.started()) == served)
        assert replica.started() == order[:served]
        await replica.finish(text)
    await settle(lambda: all(task.done() for task in calls.tasks.values()))
    assert all(task.result()[-1].status.code == sc.SUCCESS for task in calls.tasks.values())


async def test_a_call_whose_replicas_are_free_does_not_wait_behind_other_targets(world):
    dispatcher, calls = world
    busy, free = Replica(dispatcher, P1), Replica(dispatcher, P2)
    for replica in (busy, free):
        await dispatcher.connect(replica.replica)
    calls.send("first", X)
    calls.send("waits", X)
    await settle(lambda: calls.waiting() == 1)
    calls.send("elsewhere", Z)
    await settle(lambda: free.started() == ["elsewhere"])
    assert busy.started() == ["first"]


async def test_a_slot_granted_to_a_call_that_left_goes_to_the_next(world):
    dispatcher, calls = world
    replica = Replica(dispatcher, P1)
    await dispatcher.connect(replica.replica)
    calls.send("first", X)
    calls.send("gives-up", X)
    calls.send("next", X)
    await settle(lambda: calls.waiting() == 2)
    await replica.finish("first")  # the slot is granted to "gives-up"...
    calls.tasks["gives-up"].cancel()  # ...whose client goes away before its task runs
    await settle(lambda: len(replica.started()) == 2)
    assert replica.started() == ["first", "next"]
    assert len(replica.replica.items) == 1  # the slot held for "gives-up" was given back
