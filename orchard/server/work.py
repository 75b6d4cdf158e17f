"""``ProcessRunnerItems``: the stream each runner replica opens to take work.

The first message is the replica's hello (see :mod:`orchard.work_protocol`); it names a
runner of the caller's, whose nodepool and model version decide what the replica serves. The
replica then joins the dispatcher until the stream ends, which loses (and, for unary calls,
retries) whatever it held. The official runner's variant (one item per call, and a control
call for cancels) is translated here, so the dispatcher sees one protocol.

Replicas on this host may open the same stream through the local link
(:mod:`orchard.runners.link`): :class:`LinkServer` reads its frames and serves them through the
same handler as the gRPC stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from clarifai_grpc.grpc.api.status import status_code_pb2 as sc
from google.protobuf.message import DecodeError
from sqlalchemy.orm import Session

from orchard import errors, work_protocol
from orchard.dispatch.dispatcher import Dispatcher
from orchard.dispatch.replicas import ConnectedReplica
from orchard.ids import PoolKey, VersionRef
from orchard.runners import link
from orchard.server.rpc import RUNNER_STREAM, GrpcAdapter, Router, Runtime, StreamCall
from orchard.services import runners

log = logging.getLogger(__name__)
router = Router()


def _serving(owner: str, runner_id: str) -> Callable[[Session], tuple[PoolKey, VersionRef]]:
    def load(session: Session) -> tuple[PoolKey, VersionRef]:
        row = runners.get_runner(session, owner, runner_id)
        return (
            PoolKey(row.user_id, row.compute_cluster_id, row.nodepool_id),
            runners.version_of(row),
        )

    return load


class _ItemPerCall:
    """One call of the official runner: it takes one item, answers a unary one in a single
    message, and ends its call once the item is done. Its cancels also go to the replica's
    control call, where that runner listens for them."""

    def __init__(self, replica: ConnectedReplica, runtime: Runtime) -> None:
        self.replica, self.runtime = replica, runtime
        self.unary: set[str] = set()

    def sending(self, message: work_protocol.Incoming) -> work_protocol.Incoming:
        """``message`` as this runner reads it."""
        for item in message.runner_items:
            kind = work_protocol.kind_of(item)
            if kind is work_protocol.ItemKind.START:
                self.replica.draining = True  # its one item: nothing more goes on this call
                if item.processing_info.runner_method_type == work_protocol.UNARY:
                    self.unary.add(item.id)
            elif kind is work_protocol.ItemKind.CANCEL:
                self._to_control(work_protocol.items(item))
            elif kind is work_protocol.ItemKind.INPUT_END:
                return work_protocol.call_end()
        return message

    def _to_control(self, message: work_protocol.Incoming) -> None:
        hello = self.replica.hello
        key = (self.replica.pool.user_id, hello.runner_id, hello.replica_id)
        control = self.runtime.runner_controls.get(key)
        if control is not None:
            control(message)

    def received(self, message: work_protocol.Outgoing) -> work_protocol.Outgoing:
        if message.runner_item_id in self.unary:  # its one output is its end
            message.status.code = sc.RUNNER_STREAM_END
        return message

    async def end_items(self, dispatcher: Dispatcher) -> None:
        """The call ended cleanly: the items on it are done."""
        for item_id in list(self.replica.items):
            await dispatcher.received(self.replica, work_protocol.item_end(item_id))


async def _read(
    requests: AsyncIterator[Any],
    replica: ConnectedReplica,
    dispatcher: Dispatcher,
    official: _ItemPerCall | None,
) -> None:
    try:
        async for message in requests:
            if official is not None:
                message = official.received(message)
            await dispatcher.received(replica, message)
    finally:
        replica.close()


async def _control(
    hello: work_protocol.Hello, requests: AsyncIterator[Any], call: StreamCall
) -> AsyncIterator[Any]:
    """The official runner's control call: the cancels of its replica's items, until it ends."""
    await call.db(_serving(call.user_id, hello.control_of))  # its runner, the caller's
    key = (call.user_id, hello.control_of, hello.replica_id)
    outbox: asyncio.Queue[Any] = asyncio.Queue()
    controls = call.runtime.runner_controls
    controls[key] = outbox.put_nowait
    reader = asyncio.create_task(_until_end(requests, outbox))
    try:
        while (message := await outbox.get()) is not None:
            yield message
    finally:
        reader.cancel()
        if controls.get(key) == outbox.put_nowait:
            del controls[key]


async def _until_end(requests: AsyncIterator[Any], outbox: asyncio.Queue[Any]) -> None:
    try:
        async for _ in requests:
            pass
    finally:
        outbox.put_nowait(None)


@router.stream("ProcessRunnerItems")
async def work(requests: AsyncIterator[Any], call: StreamCall) -> AsyncIterator[Any]:
    first = await anext(requests, None)
    if first is None:
        return
    try:
        hello = work_protocol.read_hello(first)
    except ValueError as exc:
        raise errors.RunnerInvalid(str(exc)) from None
    call.owner(hello.user_id)
    if hello.control_of:
        async for message in _control(hello, requests, call):
            yield message
        return
    pool, version = await call.db(_serving(call.user_id, hello.runner_id))
    session = ConnectedReplica(hello, pool, version, deliver=call.deliver)
    official = _ItemPerCall(session, call.runtime) if hello.item_per_call else None
    dispatcher = call.runtime.dispatcher
    await dispatcher.connect(session)
    reader = asyncio.create_task(_read(requests, session, dispatcher, official))
    try:
        while (message := await session.outbox.get()) is not None:
            yield message if official is None else official.sending(message)
        if official is not None:
            yield work_protocol.call_end()  # resumed only once written: the runner still listens
            await official.end_items(dispatcher)
    finally:
        reader.cancel()
        await dispatcher.disconnect(session)


class LinkServer:
    """The server's end of the local link: a Unix socket at ``path`` (``mode``: 0600 unless
    replicas run as other uids) whose connections are ``ProcessRunnerItems`` streams, served by
    ``adapter`` as gRPC ones are. A frame over ``max_frame_bytes`` breaks its link, as a
    message over the server's limit ends a gRPC stream."""

    def __init__(
        self,
        adapter: GrpcAdapter,
        path: Path,
        mode: int = 0o600,
        max_frame_bytes: int = link.MAX_FRAME_BYTES,
    ) -> None:
        self.adapter, self.path, self.mode = adapter, path, mode
        self.max_frame_bytes = max_frame_bytes
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> str:
        return link.link_address(str(self.path))

    async def start(self) -> None:
        self.path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._serve, str(self.path))
        os.chmod(self.path, self.mode)

    async def close(self) -> None:
        """Stop listening and end every open link (their replicas see the stream end)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._links):
            writer.close()
        self.path.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._links.add(writer)
        try:
            credentials = await link.read_frame(reader, self.max_frame_bytes)
            if credentials is None:
                return
            metadata = (("authorization", credentials.decode(errors="replace")),)
            responses = self.adapter.serve_stream(
                RUNNER_STREAM,
                _frames(reader, self.max_frame_bytes),
                metadata,
                # Items for the replica go out at once: the dispatcher bounds how many it has in
                # flight. Once the link is closing they are dropped: its session is ending.
                deliver=functools.partial(link.write_now, writer),
            )
            async with contextlib.aclosing(responses):
                async for response in responses:
                    await link.write_frame(writer, response)
        except link.LinkError as exc:
            log.info("a runner's link ended: %s", exc)
        finally:
            self._links.discard(writer)
            writer.close()


async def _frames(
    reader: asyncio.StreamReader, max_bytes: int
) -> AsyncIterator[work_protocol.Outgoing]:
    """The runner's messages on a link, until it closes its end (or breaks it, which ends
    them too: the replica's items are then lost, as when a gRPC stream breaks)."""
    try:
        while (data := await link.read_frame(reader, max_bytes)) is not None:
            yield work_protocol.Outgoing.FromString(data)
    except (link.LinkError, DecodeError) as exc:
        log.warning("a runner's link broke: %s", exc)
