"""Blocking model code on an event loop: sync iterators stepped in worker threads, and async
iterators read from a worker thread.

A running thread cannot be interrupted. When the consumer of :func:`iterate_in_threads` is
cancelled while a step runs, the cancellation takes effect at once and the iterator is closed
(``close()`` in a worker thread, so a generator's ``finally`` runs) as soon as that step returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger("orchard.runners")

_END: Any = object()


async def iterate_in_threads(items: Iterator[T]) -> AsyncIterator[T]:
    """``items`` advanced one step per worker-thread hop; closed when the consumer stops."""
    pending: asyncio.Future[Any] | None = None
    try:
        while True:
            pending = asyncio.ensure_future(asyncio.to_thread(next, items, _END))
            value = await asyncio.shield(pending)
            pending = None
            if value is _END:
                return
            yield value
    finally:
        if pending is not None and not pending.done():
            pending.add_done_callback(lambda step: _close_after(step, items))
        else:
            await asyncio.to_thread(close_quietly, items)


def _close_after(step: asyncio.Future[Any], items: Iterator[Any]) -> None:
    """Runs on the loop once an abandoned step returned: retrieve its outcome, then close."""
    if not step.cancelled() and step.exception() is not None:
        log.debug("a cancelled call's last step raised", exc_info=step.exception())
    asyncio.get_running_loop().run_in_executor(None, close_quietly, items)


def close_quietly(items: Any) -> None:
    """``items.close()`` if it has one; an exception from the model's cleanup is only logged."""
    close = getattr(items, "close", None)
    if close is None:
        return
    try:
        close()
    except Exception:
        log.exception("closing a model's generator raised")


def blocking_iterator(items: AsyncIterator[T], loop: asyncio.AbstractEventLoop) -> Iterator[T]:
    """For a worker thread: each item of ``items`` fetched on ``loop`` and waited for here.

    Never call it on the loop's own thread (it would wait for itself)."""
    while (value := asyncio.run_coroutine_threadsafe(_next(items), loop).result()) is not _END:
        yield value


async def _next(items: AsyncIterator[T]) -> Any:
    return await anext(items, _END)


@contextlib.asynccontextmanager
async def closing(iterator: AsyncIterator[Any]) -> AsyncIterator[None]:
    """Close ``iterator`` (``aclose``, when it has one) however the block ends, so that a
    generator under it is closed now rather than when it is garbage collected."""
    try:
        yield
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()
