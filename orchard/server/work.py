"""``ProcessRunnerItems``: the stream each runner replica opens to take work.

The first message is the replica's hello (see :mod:`orchard.runners.protocol`); it names a
runner of the caller's, whose nodepool and model version decide what the replica serves. The
replica then joins the dispatcher until the stream ends, which loses (and, for unary calls,
retries) whatever it held.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy.orm import Session

from orchard import errors
from orchard.dispatch.dispatcher import Dispatcher
from orchard.dispatch.sessions import PoolKey, RunnerSession
from orchard.runners import protocol
from orchard.server.rpc import Router, StreamCall
from orchard.services import runners
from orchard.services.models import VersionRef

router = Router()


def _serving(owner: str, runner_id: str) -> Any:
    def load(session: Session) -> tuple[PoolKey, VersionRef]:
        row = runners.get_runner(session, owner, runner_id)
        return (
            PoolKey(row.user_id, row.compute_cluster_id, row.nodepool_id),
            runners.version_of(row),
        )

    return load


async def _read(
    requests: AsyncIterator[Any], session: RunnerSession, dispatcher: Dispatcher
) -> None:
    try:
        async for message in requests:
            await dispatcher.received(session, message)
    finally:
        session.close()


@router.stream("ProcessRunnerItems")
async def work(requests: AsyncIterator[Any], call: StreamCall) -> AsyncIterator[Any]:
    first = await anext(requests, None)
    if first is None:
        return
    try:
        hello = protocol.read_hello(first)
    except ValueError as exc:
        raise errors.RunnerInvalid(str(exc)) from None
    call.owner(hello.user_id)
    pool, version = await call.db(_serving(call.user_id, hello.runner_id))
    session = RunnerSession(hello, pool, version)
    dispatcher: Dispatcher = call.runtime.dispatcher
    await dispatcher.connect(session)
    reader = asyncio.create_task(_read(requests, session, dispatcher))
    try:
        while (message := await session.outbox.get()) is not None:
            yield message
    finally:
        reader.cancel()
        await dispatcher.disconnect(session)
