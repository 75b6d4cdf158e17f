"""The dispatcher: one code path for all three call shapes.

A call is resolved to a :class:`~orchard.dispatch.targets.Target` (a model version and the
nodepools that may serve it), then becomes one *item* on one replica chosen by
:func:`~orchard.dispatch.choose.choose_replica`; the item's outputs stream back until its end.
A unary call is an item with one output, a generate call an item with many, a stream call an
item that also receives the client's later requests.

Holding. With no replica free, a call waits (the scale-from-zero path) until a replica has a
slot, its deadline, or the hold bound passes; then it fails with MODEL_DEPLOYING (no replica
connected) or MODEL_BUSY_PLEASE_RETRY (all busy), statuses the official SDK retries. At most
``max_queue`` calls wait per target; beyond that a call is refused at once (MODEL_BUSY...).

Order: first come, first served. Waiting calls queue per target, in arrival order. Whenever a
slot may have freed (an item ended or was given up, a replica connected or left) the slots go
out at once, in the same step, to the calls that waited longest: the oldest waiting call of all
targets is looked at first, and a call gets a slot only if no call that came before it could
use that slot (:meth:`Dispatcher._grant`; :func:`~orchard.dispatch.choose.choose_replica` picks
which of its free replicas). The slot is then held for that call (its item is open) while its
task wakes up, so a call that arrives in between cannot take it: a new call takes a free replica
directly only when nothing is waiting at all. Without this, a freed slot went to whichever call
asked next, often a newly arrived one, and at 200 callers on 8 slots some calls waited 9 s
while the median took 0.5 s (``benchmarks/fairness.py``).

Caveats. Fairness is per server process and among the calls waiting in it. A call whose target
has no free replica never holds back a later call whose target does (targets on other replicas
do not wait for each other). Within a target, calls are served strictly in order; targets that
share replicas (a deployment and a nodepool selector for the same version) take turns by
arrival. A call sent again (its replica refused it while draining, or went away) queues anew,
behind the calls already waiting. Calls of one queue are assumed to have the same replicas:
when a patch changes a deployment's nodepools, the calls already waiting keep the target they
resolved.

Failures. A client that goes away (or whose deadline passes) cancels its item on the replica.
A replica that goes away mid-call: a unary call that has no output yet is sent once more to
another replica; any other call ends with RUNNER_PROCESSING_FAILED. A replica that its provider
killed for using more memory than its model may (:meth:`Dispatcher.out_of_memory`) was most
likely killed by an input it was given, which would do the same on another replica: none of its
calls is sent again, and each ends with INPUT_OVER_LIMIT saying so and what to do (the replica
cannot tell which of its calls it was, so all the calls it held end so).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeAlias

from clarifai_grpc.grpc.api import service_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2 as sc

from orchard import errors, work_protocol
from orchard.dispatch.choose import ReplicaLoad, choose_replica
from orchard.dispatch.replicas import ConnectedReplica, Lost, Refused, SentItem
from orchard.dispatch.targets import Target
from orchard.ids import PoolKey, VersionRef
from orchard.quantities import human_bytes

log = logging.getLogger(__name__)
Request: TypeAlias = service_pb2.PostModelOutputsRequest
Response: TypeAlias = service_pb2.MultiOutputResponse


MAX_ATTEMPTS = 3  # a call refused by draining replicas moves on at most this often


@dataclass
class DispatchSettings:
    hold_seconds: float = 30.0  # how long a call may wait for a replica
    max_queue: int = 512  # calls waiting per target


_arrivals = itertools.count()


@dataclass(eq=False)
class _Waiter:
    """A call waiting for a slot: ``granted`` gets the item opened for it."""

    target: Target
    granted: asyncio.Future[SentItem]
    order: int = field(default_factory=lambda: next(_arrivals))


class Dispatcher:
    def __init__(self, settings: DispatchSettings | None = None) -> None:
        self.settings = settings or DispatchSettings()
        self._replicas: dict[tuple[PoolKey, VersionRef], list[ConnectedReplica]] = defaultdict(list)
        self._queues: dict[str, deque[_Waiter]] = {}  # by target.queue; no empty ones
        # calls waiting, by each (nodepool, version) that could serve them
        self._waiting_for: dict[tuple[PoolKey, VersionRef], int] = defaultdict(int)
        self.on_wait: Callable[[], None] | None = None  # a call began waiting for a replica

    # -- replicas --------------------------------------------------------------------------

    async def connect(self, replica: ConnectedReplica) -> None:
        self._replicas[(replica.pool, replica.version)].append(replica)
        log.info("replica %s connected (capacity %d)", replica.key, replica.capacity)
        self._grant()

    async def disconnect(self, replica: ConnectedReplica) -> None:
        replicas = self._replicas.get((replica.pool, replica.version), [])
        if replica in replicas:
            replicas.remove(replica)
        replica.lose_all()
        log.info("replica %s disconnected", replica.key)
        self._grant()

    def out_of_memory(self, replica_id: str, used: int, limit: int) -> None:
        """Replica ``replica_id`` is being killed for using ``used`` bytes of memory, over its
        ``limit``: the calls it holds end with InputTooLarge once its stream ends, and none
        goes to another replica. Called by its provider, before the kill."""
        for replica in self.replicas():
            if replica.hello.replica_id == replica_id:
                replica.out_of_memory = (used, limit, len(replica.items))

    async def received(self, replica: ConnectedReplica, message: work_protocol.Outgoing) -> None:
        if replica.receive(message) and self._queues:
            self._grant()  # a slot freed and someone is waiting for one

    def replicas_of(self, target: Target) -> list[ConnectedReplica]:
        found = []
        for pool, _ in target.pools:
            for replica in self._replicas.get((pool, target.version), []):
                if not target.runner_id or replica.hello.runner_id == target.runner_id:
                    found.append(replica)
        return found

    def replicas(self) -> list[ConnectedReplica]:
        """Every connected replica."""
        return [s for group in self._replicas.values() for s in group]

    def load(self, pools: Iterable[PoolKey], version: VersionRef) -> tuple[int, int]:
        """(items in flight, calls waiting) for ``version`` on ``pools``. A waiting call is
        counted once even when several of the pools could serve it."""
        keys = [(pool, version) for pool in pools]
        in_flight = sum(len(s.items) for key in keys for s in self._replicas.get(key, []))
        waiting = max((self._waiting_for.get(key, 0) for key in keys), default=0)
        return in_flight, waiting

    # -- choosing a replica ----------------------------------------------------------------

    def _pick(self, target: Target) -> ConnectedReplica | None:
        priority = dict(target.pools)
        candidates = {s.key: s for s in self.replicas_of(target)}
        views = [
            ReplicaLoad(s.key, priority[s.pool], len(s.items), s.capacity, s.last_used, s.draining)
            for s in candidates.values()
        ]
        chosen = choose_replica(views)
        return candidates[chosen] if chosen else None

    async def _acquire(self, target: Target, deadline: float) -> SentItem:
        """An item on a replica of ``target``: at once when nothing waits and a replica is
        free, else once this call's turn comes (see the module docstring)."""
        if not self._queues:
            replica = self._pick(target)
            if replica is not None:
                return replica.open()
        waiter = self._enqueue(target)
        granted = False
        try:
            self._grant()
            hold_until = min(deadline, time.monotonic() + self.settings.hold_seconds)
            async with asyncio.timeout(max(0.0, hold_until - time.monotonic())):
                item = await waiter.granted
            granted = True
            return item
        except TimeoutError:
            raise self._no_replica(target) from None
        finally:
            self._leave(waiter, granted)

    def _enqueue(self, target: Target) -> _Waiter:
        queue = self._queues.get(target.queue, ())
        if len(queue) >= self.settings.max_queue:
            raise errors.ModelBusy(
                f"queue full (queued={len(queue)}, max={self.settings.max_queue}) for "
                f"{target.label}; retry later"
            )
        waiter = _Waiter(target, asyncio.get_running_loop().create_future())
        self._queues.setdefault(target.queue, deque()).append(waiter)
        self._count_waiting(target, 1)
        return waiter

    def _leave(self, waiter: _Waiter, granted: bool) -> None:
        """``waiter`` stops waiting; a slot granted to it that it did not take (its deadline
        or its client's cancel came first) goes to the next call."""
        queue = self._queues.get(waiter.target.queue)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            if not queue:
                del self._queues[waiter.target.queue]
        self._count_waiting(waiter.target, -1)
        future = waiter.granted
        if not granted and future.done() and not future.cancelled():
            item = future.result()
            item.finished = True
            item.replica.items.pop(item.id, None)
            self._grant()

    def _grant(self) -> None:
        """Give the free slots to the waiting calls, the longest-waiting first. The oldest call
        of each queue is a candidate, the oldest candidate goes first; a queue whose oldest
        call finds no free replica is done for this round (its later calls would find none)."""
        heads = [(queue[0].order, key) for key, queue in self._queues.items()]
        heapq.heapify(heads)
        while heads:
            _, key = heapq.heappop(heads)
            queue = self._queues[key]
            waiter = queue[0]
            if not waiter.granted.done():  # else its task was cancelled and will leave
                replica = self._pick(waiter.target)
                if replica is None:
                    continue
                waiter.granted.set_result(replica.open())
            queue.popleft()
            if queue:
                heapq.heappush(heads, (queue[0].order, key))
            else:
                del self._queues[key]

    def _count_waiting(self, target: Target, step: int) -> None:
        for pool, _ in target.pools:
            self._waiting_for[(pool, target.version)] += step
        if step > 0 and self.on_wait is not None:
            self.on_wait()

    def _no_replica(self, target: Target) -> errors.OrchardError:
        if self.replicas_of(target):
            return errors.ModelBusy(
                f"every replica of {target.label} stayed busy for "
                f"{self.settings.hold_seconds:g} s; retry later"
            )
        return errors.ModelDeploying(
            f"no replica of {target.label} is ready (model {target.version.model_id!r} "
            f"version {target.version.version_id}); start one with `orchard runner` (or "
            "`clarifai model serve`) or wait for the deployment to scale up"
        )

    # -- calls -----------------------------------------------------------------------------

    async def call(
        self,
        target: Target,
        shape: int,
        first: Request,
        rest: AsyncIterator[Request] | None,
        deadline: float,
    ) -> AsyncIterator[Response]:
        """The call's responses, in order. Errors end the stream with a final status."""
        retry_allowed = shape == work_protocol.UNARY
        for _attempt in range(MAX_ATTEMPTS):
            item = await self._acquire(target, deadline)
            lost: Lost | None = None
            async for response in self._run(item, shape, first, rest, deadline):
                if isinstance(response, Lost):
                    lost = response
                    break
                retry_allowed = False
                yield response
            if lost is None:
                return
            if isinstance(lost, Refused):
                continue  # nothing ran; any shape may go to another replica
            if item.replica.out_of_memory is not None:
                raise _too_large_for_memory(target, *item.replica.out_of_memory)
            if retry_allowed:
                log.warning(
                    "replica %s went away before answering; retrying once", item.replica.key
                )
                retry_allowed = False
                continue
            break
        raise errors.RunnerFailed(
            f"the replica serving {target.label} went away mid-call; retry the call"
        )

    async def _run(
        self,
        item: SentItem,
        shape: int,
        first: Request,
        rest: AsyncIterator[Request] | None,
        deadline: float,
    ) -> AsyncIterator[Response | object]:
        replica = item.replica
        replica.send(work_protocol.start(item.id, shape, first))
        feeder = (
            asyncio.create_task(self._feed(item, rest))
            if shape == work_protocol.BIDI and rest is not None
            else None
        )
        try:
            async with asyncio.timeout_at(_loop_time(deadline)):
                async for event in item.outputs():
                    yield event
        except TimeoutError:
            raise errors.OrchardError(
                "the call's deadline passed before the model answered"
            ) from None
        finally:
            if feeder is not None:
                feeder.cancel()
            if not item.finished:
                replica.cancel(item)
                replica.items.pop(item.id, None)
                self._grant()

    @staticmethod
    async def _feed(item: SentItem, rest: AsyncIterator[Request]) -> None:
        """Forward a stream call's later requests to its item, then the input end."""
        try:
            async for request in rest:
                if item.finished:
                    return
                item.replica.send(work_protocol.next_request(item.id, request))
        finally:
            if not item.finished:
                item.replica.send(work_protocol.control(item.id, sc.RUNNER_STREAM_END))


def _too_large_for_memory(
    target: Target, used: int, limit: int, calls: int
) -> errors.InputTooLarge:
    others = f" and {calls - 1} other call(s)" if calls > 1 else ""
    return errors.InputTooLarge(
        f"the input was too large for the model's memory: the replica of {target.label} "
        f"running this call{others} was killed using {human_bytes(used)} of memory, over its "
        f"limit of {human_bytes(limit)}; send smaller inputs, or raise "
        "inference_compute_info.cpu_memory in the model's config.yaml"
    )


def _loop_time(deadline: float) -> float:
    """``time.monotonic`` deadline as the running loop's clock."""
    loop = asyncio.get_running_loop()
    return loop.time() + (deadline - time.monotonic())
