"""One ``ProcessRunnerItems`` stream of a runner, from the hello to its end.

The runner writes the hello before it builds a :class:`WorkStreamServer`; the session then reads the
server's items (see :mod:`orchard.work_protocol`) and runs each start as its own task:

- a start waits for one of the replica's slots (:class:`Slots`), calls the model through its
  adapter and sends every response as an output as soon as it exists, then the item end; the
  end goes out however the item finished: done, failed or cancelled;
- ``next`` and ``input end`` feed a stream-stream item's request iterator;
- ``cancel`` ends the item's request feed (a sync stream method may be waiting on it in a
  thread) and cancels its task; the adapter closes the model's generator;
- everything written goes through one :class:`Outbox`, which writes one message at a time in
  the order sent (an item's outputs, then its end): a generate's outputs through its pump,
  which coalesces bursts; an item's end, and a stream-stream item's outputs, from the item's
  own task when nothing waits to be written.

The session ends when the stream breaks, when the server refuses the runner (raises
:class:`Refused`), or by a drain when ``stop`` is set: the draining message goes out, starts
that cross it are refused, held items finish (until the drain timeout or ``force``; then they
are cancelled), the writes are flushed and half-closed, and the server closes the call. Items
still held when a stream breaks are cancelled: the server has given up on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from clarifai_grpc.grpc.api.status import status_code_pb2

from orchard import work_protocol
from orchard.runners.adapters import ModelAdapter
from orchard.runners.items import RunningItem, run_item
from orchard.runners.link import LinkCall, LinkError
from orchard.runners.models import calls
from orchard.work_protocol import ItemKind

log = logging.getLogger("orchard.runners")

# gRPC codes that mean "the server will not take this runner": exit rather than reconnect.
FATAL_CODES = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
ITEM_LOG_LEVELS = {"failed": logging.WARNING, "cancelled": logging.INFO}
CANCEL_GRACE_S = 2.0  # for cancelled items to send their ends, at the end of a drain
CLOSE_GRACE_S = 5.0  # for the server to close the call after the runner half-closed it

Spawn = Callable[[Coroutine[Any, Any, Any]], "asyncio.Task[Any]"]


class WorkCall(Protocol):
    """A replica's open work stream: a grpc.aio stream-stream call, or a :class:`LinkCall`."""

    async def write(self, message: work_protocol.Outgoing) -> None: ...

    async def read(self) -> Any: ...  # an Incoming, or grpc.aio.EOF once the server ends it

    async def done_writing(self) -> None: ...

    def cancel(self) -> bool: ...


class Refused(Exception):
    """The server refused this runner (bad PAT, bad hello, unknown runner)."""


@dataclass(frozen=True)
class WorkStreamSettings:
    max_output_bytes: int
    drain_timeout: float


class Slots:
    """The replica's capacity: at most ``capacity`` items run at once, the rest wait."""

    def __init__(self, capacity: int) -> None:
        self._free = asyncio.Semaphore(capacity)
        self.running = 0
        self.waiting = 0

    async def acquire(self) -> None:
        if self._free.locked():
            self.waiting += 1
            try:
                await self._free.acquire()
            finally:
                self.waiting -= 1
        else:
            await self._free.acquire()  # free now: returns at once
        self.running += 1

    def release(self) -> None:
        self.running -= 1
        self._free.release()


class Outbox:
    """The one writer of a stream (``call``). ``send`` waits while ``limit`` messages are
    queued (so a fast model cannot outrun the network) and returns at once after ``close``.
    Writes happen one at a time, in the order sent; coalescing never makes a message larger
    than ``max_bytes``."""

    def __init__(self, call: WorkCall, limit: int = 256, max_bytes: int = 64 << 20) -> None:
        self._call = call
        self._max_bytes = max_bytes
        self._write_now = call.write_now if isinstance(call, LinkCall) else None
        self._queue: asyncio.Queue[work_protocol.Outgoing] = asyncio.Queue(limit)
        self._writing = asyncio.Lock()
        self._closed = False

    async def send(self, message: work_protocol.Outgoing, *, now: bool = False) -> None:
        """Queue ``message`` for the pump, which coalesces bursts; or, with ``now`` and nothing
        waiting to be written, write it from the calling task (no hand-over to the pump). That
        happens on the local link, whose writes never wait, and on gRPC only for an item's end:
        cancelling a gRPC write cancels the whole call, and an ending item is never cancelled."""
        if self._closed:
            return
        if now and self._queue.empty() and not self._writing.locked():
            if self._write_now is not None:
                if self._write_now(message):
                    return
            elif (
                message.runner_item_id and message.status.code == status_code_pb2.RUNNER_STREAM_END
            ):
                async with self._writing:
                    await self._call.write(message)
                return
        await self._queue.put(message)

    async def pump(self) -> None:
        """Write every queued message, in order, until cancelled or the call fails. Messages
        already waiting are coalesced: consecutive outputs of one item (and its end) travel as
        one message, which is what keeps a fast generate from paying one write per chunk."""
        while True:
            batch = [await self._queue.get()]
            while len(batch) < COALESCE and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                async with self._writing:
                    for message in _coalesced(batch, self._max_bytes):
                        await self._call.write(message)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def flush(self) -> None:
        """Wait until everything sent so far was written."""
        await self._queue.join()
        async with self._writing:
            pass

    def close(self) -> None:
        self._closed = True


COALESCE = 64  # messages merged into one write at most


def _coalesced(batch: list[work_protocol.Outgoing], max_bytes: int) -> list[work_protocol.Outgoing]:
    """``batch`` with each run of one item's outputs (ending at its end, if any) merged, as
    long as a merged message stays within ``max_bytes``."""
    merged: list[work_protocol.Outgoing] = []
    size = -1  # of merged[-1] (-1: not counted yet), summed over the messages it was made of
    for message in batch:
        last = merged[-1] if merged else None
        if (
            last is not None
            and message.runner_item_id
            and last.runner_item_id == message.runner_item_id
            and last.runner_item_outputs
            and not last.status.code
        ):
            size = size if size >= 0 else last.ByteSize()
            message_size = message.ByteSize()
            if size + message_size <= max_bytes:
                last.runner_item_outputs.extend(message.runner_item_outputs)
                last.status.CopyFrom(message.status)
                size += message_size
                continue
        merged.append(message)
        size = -1
    return merged


class WorkStreamServer:
    """Serves the items of one open stream (``call``, its hello already written)."""

    def __init__(
        self,
        call: WorkCall,
        model: ModelAdapter,
        slots: Slots,
        settings: WorkStreamSettings,
        spawn: Spawn,
    ) -> None:
        self.call, self.model, self.slots, self.settings = call, model, slots, settings
        self._spawn = spawn
        self.items: dict[str, RunningItem] = {}
        self.draining = False
        self._outbox = Outbox(call, max_bytes=settings.max_output_bytes)

    async def serve(self, stop: asyncio.Event, force: asyncio.Event) -> None:
        """Until the stream breaks, or a drain after ``stop`` completes; raises Refused."""
        writer = self._spawn(self._outbox.pump())
        reader = self._spawn(self._read())
        stopped = self._spawn(stop.wait())
        try:
            await asyncio.wait({writer, reader, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if stopped.done() and not (reader.done() or writer.done()):
                await self._drain(reader, writer, force)
            elif writer.done() and not reader.done():
                # a failed write: the reader is about to see why the call ended
                await asyncio.wait({reader}, timeout=1.0)
            _check_ending(reader, writer, quiet=self.draining)
        finally:
            for task in (writer, reader, stopped):
                task.cancel()
            self._abandon()

    # -- reading the server's items -------------------------------------------------------

    async def _read(self) -> None:
        while (message := await self.call.read()) is not grpc.aio.EOF:
            if (reason := work_protocol.refusal(message)) is not None:
                raise Refused(reason)
            for runner_item in message.runner_items:
                self._on_item(runner_item)

    def _on_item(self, runner_item: Any) -> None:
        kind = work_protocol.kind_of(runner_item)
        held = self.items.get(runner_item.id)
        if kind is ItemKind.START:
            self._start(runner_item)
        elif kind is ItemKind.CANCEL:
            self.cancel(runner_item.id)
        elif held is not None and held.feed is not None and kind is ItemKind.NEXT:
            held.feed.put(runner_item.post_model_outputs_request)
        elif held is not None and held.feed is not None and kind is ItemKind.INPUT_END:
            held.feed.end()
        else:
            log.debug(
                "ignoring a %s for item %s: not a stream it holds", kind.value, runner_item.id
            )

    def _start(self, runner_item: Any) -> None:
        if self.draining:
            refused = work_protocol.refused(runner_item.id, "the runner is draining")
            self._spawn(self._outbox.send(refused))
            return
        if runner_item.id in self.items:
            log.warning("ignoring a second start of item %s", runner_item.id)
            return
        shape = runner_item.processing_info.runner_method_type
        item = RunningItem.start(runner_item.id, shape, runner_item.post_model_outputs_request)
        self.items[item.id] = item
        item.task = self._spawn(self._serve_item(item))

    def cancel(self, item_id: str) -> None:
        """Stop a held item (it still sends its end); an unknown id is a no-op."""
        item = self.items.get(item_id)
        if item is None or item.task is None or item.ending:
            return
        if item.feed is not None:
            item.feed.end()
        item.task.cancel()

    # -- running an item --------------------------------------------------------------------

    async def _serve_item(self, item: RunningItem) -> None:
        """Run the item, then send its end however it finished."""
        started = time.monotonic()
        try:
            outcome = await self._outcome_of(item)
            item.ending = True  # a cancel from here on must not stop the end going out
            await self._outbox.send(work_protocol.item_end(item.id, item.final), now=True)
        finally:
            self.items.pop(item.id, None)
        # A line for every item only at DEBUG (a busy replica serves thousands a second, and
        # its output becomes the runner log); cancelled and failed items always show.
        level = ITEM_LOG_LEVELS.get(outcome, logging.DEBUG)
        if log.isEnabledFor(level):
            method = self.model.method_name(item.request, item.entry)
            elapsed_ms = (time.monotonic() - started) * 1000
            log.log(
                level, "%s %s %s %.1fms item=%s", item.entry, method, outcome, elapsed_ms, item.id
            )

    def _sender(self, item: RunningItem) -> Callable[[work_protocol.Outgoing], Awaitable[None]]:
        """How an item's outputs go out: a stream-stream item's at once (someone waits for each
        one), a generate's through the pump, which coalesces bursts of them."""
        if item.shape == work_protocol.BIDI:
            return functools.partial(self._outbox.send, now=True)
        return self._outbox.send

    async def _outcome_of(self, item: RunningItem) -> str:
        try:
            await self.slots.acquire()
            try:
                max_bytes = self.settings.max_output_bytes
                return await run_item(item, self.model, self._sender(item), max_bytes)
            finally:
                self.slots.release()
        except asyncio.CancelledError:
            _uncancel()
            return "cancelled"
        except Exception as exc:
            log.exception("serving item %s failed in the runner", item.id)
            failure = calls.failed_response(
                f"the runner failed serving this item: {type(exc).__name__}: {exc}"
            )
            await self._outbox.send(work_protocol.output(item.id, failure))
            return "error"

    # -- the end ------------------------------------------------------------------------------

    async def _drain(
        self, reader: asyncio.Task[Any], writer: asyncio.Task[Any], force: asyncio.Event
    ) -> None:
        self.draining = True
        await self._outbox.send(work_protocol.draining())
        held, timeout = len(self.items), self.settings.drain_timeout
        log.info("draining: finishing %d item(s), for up to %.0fs", held, timeout)
        stream = {reader, writer}
        await self._settle(self.settings.drain_timeout, stream, force)
        if self.items and not (reader.done() or writer.done()):
            log.warning("drain timeout: cancelling %d item(s)", len(self.items))
            for item_id in list(self.items):
                self.cancel(item_id)
            await self._settle(CANCEL_GRACE_S, stream, None)
        await self._close(reader, writer)

    async def _settle(
        self, timeout: float, stream: set[asyncio.Task[Any]], force: asyncio.Event | None
    ) -> None:
        """Wait until no item is held, the stream ends, ``force`` is set, or ``timeout``."""
        deadline = time.monotonic() + timeout
        forced = self._spawn(force.wait()) if force is not None else None
        try:
            while self.items and not any(t.done() for t in stream):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (forced is not None and forced.done()):
                    return
                waits = {i.task for i in self.items.values() if i.task is not None} | stream
                if forced is not None:
                    waits.add(forced)
                await asyncio.wait(waits, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if forced is not None:
                forced.cancel()

    async def _close(self, reader: asyncio.Task[Any], writer: asyncio.Task[Any]) -> None:
        """Flush, half-close, and give the server a moment to end the call."""
        flushed = self._spawn(self._outbox.flush())
        await asyncio.wait(
            {flushed, writer}, timeout=CLOSE_GRACE_S, return_when=asyncio.FIRST_COMPLETED
        )
        flushed.cancel()
        if writer.done():
            return
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError, LinkError):
            await self.call.done_writing()
        await asyncio.wait({reader}, timeout=CLOSE_GRACE_S)

    def _abandon(self) -> None:
        """The stream is over: nothing more is written, and held items are cancelled."""
        self._outbox.close()
        for item_id in list(self.items):
            self.cancel(item_id)
        self.call.cancel()


def _check_ending(reader: asyncio.Task[Any], writer: asyncio.Task[Any], *, quiet: bool) -> None:
    """Raise Refused when the stream ended by a refusal; log any other break (unless
    ``quiet``: the end of a drain)."""
    for task in (reader, writer):
        if not task.done() or task.cancelled() or task.exception() is None:
            continue
        exc = task.exception()
        if isinstance(exc, Refused):
            raise exc
        if isinstance(exc, grpc.aio.AioRpcError):
            if exc.code() in FATAL_CODES:
                raise Refused(f"{exc.code().name}: {exc.details()}") from exc
            if not quiet:
                log.warning("the stream broke: %s: %s", exc.code().name, exc.details())
            return
        if isinstance(exc, LinkError):
            if not quiet:
                log.warning("the stream broke: %s", exc)
            return
        if not isinstance(exc, asyncio.InvalidStateError):  # a write after the call ended
            log.error("the stream failed", exc_info=exc)
        return
    if reader.done() and not reader.cancelled() and not quiet:
        log.warning("the server ended the stream")


def _uncancel() -> None:
    """The item handled its cancellation (it still sends its end): clear the request."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
