"""The server's record of each connected replica (``ConnectedReplica``) and of the items in
flight on it (``SentItem``)."""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from clarifai_grpc.grpc.api import service_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2 as sc

from orchard import work_protocol
from orchard.ids import PoolKey, VersionRef


class Ended:
    """An item's outputs are complete."""


class Lost:
    """The replica went away before the item ended."""


class Refused(Lost):
    """The replica declined the item (it had begun draining); nothing of it ran."""


END, LOST, REFUSED = Ended(), Lost(), Refused()
_order = itertools.count()
# Item ids: unique within this server process (a count) and across its restarts (a prefix).
_ITEM_PREFIX = secrets.token_hex(4)
_items = itertools.count(1)


class SentItem:
    """One call in flight on a replica: its outputs arrive in ``events``."""

    def __init__(self, replica: ConnectedReplica) -> None:
        self.id = f"{_ITEM_PREFIX}{next(_items):x}"
        self.replica = replica
        self.events: asyncio.Queue[service_pb2.MultiOutputResponse | Ended | Lost] = asyncio.Queue()
        self.finished = False

    async def outputs(self) -> AsyncIterator[service_pb2.MultiOutputResponse | Lost]:
        while True:
            event = await self.events.get()
            if event is END:
                return
            yield event
            if isinstance(event, Lost):
                return


@dataclass(eq=False)
class ConnectedReplica:
    """One replica with an open work stream, as the dispatcher sees it: its hello, where it
    runs, what it serves, and the items sent to it that have not ended."""

    hello: work_protocol.Hello
    pool: PoolKey
    version: VersionRef
    priority_of: dict[PoolKey, int] = field(default_factory=dict)
    # The replica's messages go to ``deliver`` when its transport writes without waiting,
    # else through ``outbox`` (which also carries the end: None).
    deliver: Callable[[work_protocol.Incoming], object] | None = None
    outbox: asyncio.Queue[work_protocol.Incoming | None] = field(default_factory=asyncio.Queue)
    items: dict[str, SentItem] = field(default_factory=dict)
    draining: bool = False
    # (bytes used, limit, items it held) when its provider killed it for its memory
    out_of_memory: tuple[int, int, int] | None = None
    last_used: float = 0.0
    order: int = field(default_factory=lambda: next(_order))

    @property
    def key(self) -> str:
        return f"{self.hello.runner_id}/{self.hello.replica_id}#{self.order}"

    @property
    def capacity(self) -> int:
        return self.hello.capacity

    def open(self) -> SentItem:
        item = SentItem(self)
        self.items[item.id] = item
        self.last_used = time.monotonic()
        return item

    def send(self, *runner_items: service_pb2.RunnerItem) -> None:
        message = work_protocol.items(*runner_items)
        if self.deliver is not None:
            self.deliver(message)
        else:
            self.outbox.put_nowait(message)

    def cancel(self, item: SentItem) -> None:
        if not item.finished:
            self.send(work_protocol.control(item.id, sc.RUNNER_ITEM_CANCELLED))

    def receive(self, message: work_protocol.Outgoing) -> bool:
        """Route one message from the replica; True when an item ended (a slot freed)."""
        if not message.runner_item_id:
            if message.status.code == sc.RUNNER_STREAM_END:
                self.draining = True
                return True
            return False
        item = self.items.get(message.runner_item_id)
        if item is None:
            return False  # an item the caller already gave up on
        if message.status.code == sc.RUNNER_NEEDS_RETRY:  # refused: it began draining
            self.items.pop(item.id, None)
            item.finished = True
            item.events.put_nowait(REFUSED)
            return True
        for output in message.runner_item_outputs:
            item.events.put_nowait(output.multi_output_response)
        if message.status.code == sc.RUNNER_STREAM_END:
            self.items.pop(item.id, None)
            item.finished = True
            item.events.put_nowait(END)
            return True
        return False

    def lose_all(self) -> None:
        for item in self.items.values():
            item.finished = True
            item.events.put_nowait(LOST)
        self.items.clear()

    def close(self) -> None:
        self.outbox.put_nowait(None)
