"""The runner: one model replica that connects out to the Orchard server and serves its items.

::

    runner = Runner(adapter_for(model), RunnerSettings(server="127.0.0.1:50051", pat=...,
                                                       runner_id="r1", capacity=4))
    exit = await runner.run()     # until drained (after stop()), refused, or the server is gone

The runner opens ``ProcessRunnerItems`` (metadata ``authorization: Key <PAT>``; on this host,
through the server's local link, :mod:`orchard.runners.link`, when given ``link:PATH``), writes the
hello with its capacity, and serves the server's items in a
:class:`~orchard.runners.work_stream.WorkStreamServer` (the per-stream rules are there).
When a stream breaks, or cannot be opened, it tries again after a delay from :class:`Backoff`
(0.1 s doubling to 5 s, jittered, reset by a stream that stayed open for the maximum delay);
items held by the broken stream are cancelled. It gives up with :attr:`Exit.SERVER_GONE` once
the server has been unreachable for longer than ``server_gone_grace``, and with
:attr:`Exit.REFUSED` at once when the server refuses it.

:meth:`Runner.stop` (SIGTERM, SIGINT) drains: the draining message goes out, nothing new is
started, held items finish (up to ``drain_timeout``; a second ``stop`` cuts that short), and the
stream is closed; ``run`` then returns :attr:`Exit.DRAINED`. Stopped while disconnected, it
returns at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import random
import socket
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import grpc

from orchard import wire, work_protocol
from orchard.runners import link
from orchard.runners.adapters import ModelAdapter
from orchard.runners.work_stream import (
    FATAL_CODES,
    Refused,
    Slots,
    WorkCall,
    WorkStreamServer,
    WorkStreamSettings,
)

log = logging.getLogger("orchard.runners")

MAX_OUTPUT_BYTES = 64 * 1024 * 1024
_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
]


def default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class RunnerSettings:
    """Where a runner connects, who it is, and its limits.

    ``server`` is ``HOST:PORT``, ``http://HOST:PORT``, ``https://HOST:PORT`` (TLS), or
    ``link:PATH``: the server's local link on this host (:mod:`orchard.runners.link`)."""

    server: str
    pat: str
    runner_id: str
    capacity: int
    user_id: str = ""
    nodepool_id: str = ""
    compute_cluster_id: str = ""
    replica_id: str = field(default_factory=default_replica_id)
    server_gone_grace: float = 60.0
    drain_timeout: float = 30.0
    max_output_bytes: int = MAX_OUTPUT_BYTES
    backoff_initial: float = 0.1
    backoff_max: float = 5.0

    def hello(self) -> work_protocol.Outgoing:
        return work_protocol.hello(
            work_protocol.Hello(
                runner_id=self.runner_id,
                nodepool_id=self.nodepool_id,
                compute_cluster_id=self.compute_cluster_id,
                replica_id=self.replica_id,
                capacity=self.capacity,
                user_id=self.user_id,
            )
        )


class Exit(enum.Enum):
    """Why :meth:`Runner.run` returned."""

    DRAINED = "drained"
    REFUSED = "refused"
    SERVER_GONE = "server gone"


class Backoff:
    """Reconnect delays: ``initial`` doubling up to ``maximum``, each one jittered to between
    half and all of its step (``rng`` gives numbers in [0, 1))."""

    def __init__(
        self, initial: float, maximum: float, rng: Callable[[], float] = random.random
    ) -> None:
        self.initial, self.maximum, self._rng = initial, maximum, rng
        self._step = initial

    def next(self) -> float:
        delay = self._step * (0.5 + 0.5 * self._rng())
        self._step = min(self._step * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self._step = self.initial


def channel_for(server: str) -> grpc.aio.Channel:
    """A channel to ``server`` (``HOST:PORT`` or an http/https URL)."""
    target = server.removesuffix("/")
    if target.startswith("https://"):
        creds = grpc.ssl_channel_credentials()
        return grpc.aio.secure_channel(target[8:], creds, options=_CHANNEL_OPTIONS)
    return grpc.aio.insecure_channel(target.removeprefix("http://"), options=_CHANNEL_OPTIONS)


class Runner:
    """Serves one loaded model over the runner protocol until drained or given up."""

    def __init__(
        self,
        model: ModelAdapter,
        settings: RunnerSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.model, self.settings = model, settings
        self._clock = clock
        self._backoff = Backoff(settings.backoff_initial, settings.backoff_max, rng)
        self._slots = Slots(settings.capacity)
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.stream_server: WorkStreamServer | None = None

    # -- state, for probes and tests ------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """A stream is open (its hello went out and it has not ended)."""
        return self.stream_server is not None

    @property
    def ready(self) -> bool:
        """Connected and not draining: the server may send it work."""
        return self.connected and not self._stop.is_set()

    @property
    def running(self) -> int:
        """Items running in the model now."""
        return self._slots.running

    @property
    def waiting(self) -> int:
        """Items received that wait for a free slot."""
        return self._slots.waiting

    def stop(self) -> None:
        """Begin a drain; called again, stop waiting for held items. Call it on the loop."""
        if self._stop.is_set():
            self._force.set()
        self._stop.set()

    # -- the connection loop ----------------------------------------------------------------

    async def run(self) -> Exit:
        """Connect, serve, reconnect; returns why it stopped (see :class:`Exit`)."""
        reachable_at = self._clock()
        try:
            while not self._stop.is_set():
                try:
                    if await self._attempt():
                        reachable_at = self._clock()
                except Refused as exc:
                    log.error("the server at %s refused this runner: %s", self.settings.server, exc)
                    return Exit.REFUSED
                if self._stop.is_set():
                    break
                left = self.settings.server_gone_grace - (self._clock() - reachable_at)
                if left < 0:
                    return self._gone()
                await self._pause(min(self._backoff.next(), left))
            return Exit.DRAINED
        finally:
            await self._cancel_all()

    def _gone(self) -> Exit:
        grace = self.settings.server_gone_grace
        log.error(
            "the server at %s has been unreachable for more than %.0fs", self.settings.server, grace
        )
        return Exit.SERVER_GONE

    async def _attempt(self) -> bool:
        """One stream, from the hello to its end; True when the hello went out."""
        async with self._stream() as call:
            if call is None or not await self._say_hello(call):
                return False
            await self._serve(call)
            return True

    @contextlib.asynccontextmanager
    async def _stream(self) -> AsyncIterator[Any]:
        """A new ``ProcessRunnerItems`` stream (a gRPC call, or a local link), closed on exit;
        None when the server cannot be reached."""
        server = self.settings.server
        if link.is_link(server):
            try:
                call = await link.LinkCall.open(server, self.settings.pat)
            except OSError as exc:
                log.info("cannot reach the server at %s: %s", server, exc)
                yield None
                return
            try:
                yield call
            finally:
                await call.close()
            return
        channel = channel_for(server)
        try:
            metadata = (("authorization", f"Key {self.settings.pat}"),)
            yield wire.callable_for(channel, "ProcessRunnerItems")(metadata=metadata)
        finally:
            await channel.close()

    async def _say_hello(self, call: WorkCall) -> bool:
        """Write the hello; False when the server cannot be reached; raises Refused."""
        try:
            await call.write(self.settings.hello())
            return True
        except link.LinkError as exc:
            log.info("cannot reach the server at %s: %s", self.settings.server, exc)
            return False
        except grpc.aio.AioRpcError as exc:
            code, details = exc.code(), exc.details()
        except asyncio.InvalidStateError:  # the call ended before the hello went out
            ended: Any = call  # a grpc.aio call: only those end before their hello
            code, details = await ended.code(), await ended.details()
        if code in FATAL_CODES:
            raise Refused(f"{code.name}: {details}")
        log.info("cannot reach the server at %s: %s", self.settings.server, code.name)
        return False

    async def _serve(self, call: WorkCall) -> None:
        settings = WorkStreamSettings(self.settings.max_output_bytes, self.settings.drain_timeout)
        self.stream_server = WorkStreamServer(call, self.model, self._slots, settings, self._spawn)
        opened = self._clock()
        log.info("connected to %s (capacity %d)", self.settings.server, self.settings.capacity)
        try:
            await self.stream_server.serve(self._stop, self._force)
        finally:
            self.stream_server = None
        if self._clock() - opened >= self._backoff.maximum:
            self._backoff.reset()

    async def _pause(self, delay: float) -> None:
        """Sleep ``delay`` seconds, or less when stop() is called."""
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel that arrives
        # in the step the wait ends in.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._stop.wait()

    # -- tasks ------------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=2.0)
