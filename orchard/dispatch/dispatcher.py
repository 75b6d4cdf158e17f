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
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import TypeAlias

from clarifai_grpc.grpc.api import service_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2 as sc

from orchard import errors
from orchard.dispatch.choose import ReplicaView, choose_replica
from orchard.dispatch.sessions import Item, Lost, PoolKey, Refused, RunnerSession
from orchard.dispatch.targets import Target
from orchard.quantities import human_bytes
from orchard.runners import protocol
from orchard.services.models import VersionRef

log = logging.getLogger(__name__)
Request: TypeAlias = service_pb2.PostModelOutputsRequest
Response: TypeAlias = service_pb2.MultiOutputResponse


MAX_ATTEMPTS = 3  # a call refused by draining replicas moves on at most this often


@dataclass
class DispatchSettings:
    hold_seconds: float = 30.0  # how long a call may wait for a replica
    max_queue: int = 512  # calls waiting per target


class Dispatcher:
    def __init__(self, settings: DispatchSettings | None = None) -> None:
        self.settings = settings or DispatchSettings()
        self._sessions: dict[tuple[PoolKey, VersionRef], list[RunnerSession]] = defaultdict(list)
        self._changed = asyncio.Condition()
        self._waiting: dict[str, int] = defaultdict(int)
        # calls waiting, by each (nodepool, version) that could serve them
        self._waiting_for: dict[tuple[PoolKey, VersionRef], int] = defaultdict(int)
        self.on_wait: Callable[[], None] | None = None  # a call began waiting for a replica

    # -- replicas --------------------------------------------------------------------------

    async def connect(self, session: RunnerSession) -> None:
        self._sessions[(session.pool, session.version)].append(session)
        log.info("replica %s connected (capacity %d)", session.key, session.capacity)
        await self._notify()

    async def disconnect(self, session: RunnerSession) -> None:
        replicas = self._sessions.get((session.pool, session.version), [])
        if session in replicas:
            replicas.remove(session)
        session.lose_all()
        log.info("replica %s disconnected", session.key)
        await self._notify()

    def out_of_memory(self, replica_id: str, used: int, limit: int) -> None:
        """Replica ``replica_id`` is being killed for using ``used`` bytes of memory, over its
        ``limit``: the calls it holds end with InputTooLarge once its stream ends, and none
        goes to another replica. Called by its provider, before the kill."""
        for session in self.sessions():
            if session.hello.replica_id == replica_id:
                session.out_of_memory = (used, limit, len(session.items))

    async def received(self, session: RunnerSession, message: protocol.Outgoing) -> None:
        if session.receive(message) and any(self._waiting.values()):
            await self._notify()  # a slot freed and someone is waiting for one

    def replicas(self, target: Target) -> list[RunnerSession]:
        found = []
        for pool, _ in target.pools:
            for session in self._sessions.get((pool, target.version), []):
                if not target.runner_id or session.hello.runner_id == target.runner_id:
                    found.append(session)
        return found

    def sessions(self) -> list[RunnerSession]:
        """Every connected replica."""
        return [s for group in self._sessions.values() for s in group]

    def load(self, pools: Iterable[PoolKey], version: VersionRef) -> tuple[int, int]:
        """(items in flight, calls waiting) for ``version`` on ``pools``. A waiting call is
        counted once even when several of the pools could serve it."""
        keys = [(pool, version) for pool in pools]
        in_flight = sum(len(s.items) for key in keys for s in self._sessions.get(key, []))
        waiting = max((self._waiting_for.get(key, 0) for key in keys), default=0)
        return in_flight, waiting

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- choosing a replica ----------------------------------------------------------------

    def _pick(self, target: Target) -> RunnerSession | None:
        priority = dict(target.pools)
        candidates = {s.key: s for s in self.replicas(target)}
        views = [
            ReplicaView(s.key, priority[s.pool], len(s.items), s.capacity, s.last_used, s.draining)
            for s in candidates.values()
        ]
        chosen = choose_replica(views)
        return candidates[chosen] if chosen else None

    async def _acquire(self, target: Target, deadline: float) -> Item:
        session = self._pick(target)
        if session is not None:
            return session.open()
        if self._waiting[target.queue] >= self.settings.max_queue:
            raise errors.ModelBusy(
                f"queue full (queued={self._waiting[target.queue]}, "
                f"max={self.settings.max_queue}) for {target.label}; retry later"
            )
        hold_until = min(deadline, time.monotonic() + self.settings.hold_seconds)
        self._waiting[target.queue] += 1
        self._count_waiting(target, 1)
        try:
            async with self._changed:
                while (session := self._pick(target)) is None:
                    remaining = hold_until - time.monotonic()
                    if remaining <= 0:
                        raise self._no_replica(target)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), remaining)
            return session.open()
        finally:
            self._waiting[target.queue] -= 1
            self._count_waiting(target, -1)

    def _count_waiting(self, target: Target, step: int) -> None:
        for pool, _ in target.pools:
            self._waiting_for[(pool, target.version)] += step
        if step > 0 and self.on_wait is not None:
            self.on_wait()

    def _no_replica(self, target: Target) -> errors.OrchardError:
        if self.replicas(target):
            return errors.ModelBusy(
                f"every replica of {target.label} stayed busy for "
                f"{self.settings.hold_seconds:g} s; retry later"
            )
        return errors.ModelDeploying(
            f"no replica of {target.label} is ready (model {target.version.model_id!r} "
            f"version {target.version.version_id}); start one with `orchard runner` or "
            "wait for the deployment to scale up"
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
        retry_allowed = shape == protocol.UNARY
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
            if item.session.out_of_memory is not None:
                raise _too_large_for_memory(target, *item.session.out_of_memory)
            if retry_allowed:
                log.warning(
                    "replica %s went away before answering; retrying once", item.session.key
                )
                retry_allowed = False
                continue
            break
        raise errors.RunnerFailed(
            f"the replica serving {target.label} went away mid-call; retry the call"
        )

    async def _run(
        self,
        item: Item,
        shape: int,
        first: Request,
        rest: AsyncIterator[Request] | None,
        deadline: float,
    ) -> AsyncIterator[Response | object]:
        session = item.session
        session.send(protocol.start(item.id, shape, first))
        feeder = (
            asyncio.create_task(self._feed(item, rest))
            if shape == protocol.BIDI and rest is not None
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
                session.cancel(item)
                session.items.pop(item.id, None)
                await self._notify()

    @staticmethod
    async def _feed(item: Item, rest: AsyncIterator[Request]) -> None:
        """Forward a stream call's later requests to its item, then the input end."""
        try:
            async for request in rest:
                if item.finished:
                    return
                item.session.send(protocol.next_request(item.id, request))
        finally:
            if not item.finished:
                item.session.send(protocol.control(item.id, sc.RUNNER_STREAM_END))


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
