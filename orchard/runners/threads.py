"""Blocking model code on an event loop: sync iterators stepped in worker threads, and async
iterators read from a worker thread.

A running thread cannot be interrupted. When the consumer of :func:`iterate_in_threads` is
cancelled while a step runs, the cancellation takes effect at once and the iterator is closed
(``close()`` in its worker thread, so a generator's ``finally`` runs) as soon as that step
returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger("orchard.runners")

_END: Any = object()


async def iterate_in_threads(items: Iterator[T]) -> AsyncIterator[T]:
    """``items`` advanced one step at a time in a worker thread of its own: the same thread for
    every step (a generator's thread-local state, such as a framework's grad mode, stays with
    it, and its data stays in that core's cache), and closed there when the consumer stops."""
    loop = asyncio.get_running_loop()
    stepper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="orchard-steps")
    pending: asyncio.Future[Any] | None = None
    try:
        while True:
            # each step sees the consumer's context variables, as asyncio.to_thread's would
            step = functools.partial(contextvars.copy_context().run, next, items, _END)
            pending = loop.run_in_executor(stepper, step)
            value = await asyncio.shield(pending)
            pending = None
            if value is _END:
                return
            yield value
    finally:
        # One thread runs the steps in order: the close follows a step still running.
        closed = loop.run_in_executor(stepper, close_quietly, items)
        stepper.shutdown(wait=False)
        if pending is None:
            await closed
        else:
            pending.add_done_callback(_abandoned)


def _abandoned(step: asyncio.Future[Any]) -> None:
    """A cancelled consumer's last step returned: retrieve its outcome (it is only logged)."""
    if not step.cancelled() and step.exception() is not None:
        log.debug("a cancelled call's last step raised", exc_info=step.exception())


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
