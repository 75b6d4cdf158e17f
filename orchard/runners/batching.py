"""Dynamic batching: concurrent inputs of a batched model method gathered into one call.

A method decorated ``@ModelClass.method(batch_size=N, batch_wait_ms=W)`` is written over lists
(see :mod:`orchard.runners.models.model_class`); clients call it like any unary method. In a
runner, the request adapter (:class:`~orchard.runners.adapters.OrchardAdapter`) keeps one
:class:`Batcher` per batched method of its model instance (:class:`ModelBatchers`), and every
input of every request to that method joins that batcher's queue.

Policy
------

- An input joins the queue when its request arrives, decoded (an input whose arguments do not
  fit fails at once and never joins). The inputs of one request join together and in order, so
  a request with many inputs (up to 128) rides in one batch, or in consecutive batches of N.
- A batch leaves when N inputs are queued or when the oldest queued input has waited W ms,
  whichever comes first, and takes the first N inputs in arrival order.
- One batch per method runs at a time; the queue keeps filling while it runs. When it ends, the
  next batch leaves at once if it is full or its oldest input has already waited W, else as
  soon as one of those holds. Not more than one by default: a second batch on the same GPU
  would mostly wait for the device behind the first while holding memory of its own, whereas
  gathering during the running batch makes the next one as full as the load allows, which is
  where the throughput comes from. A method whose call spends much of its time off the device
  (decoding images, tokenizing) may ask for ``max_concurrent_batches=K``: up to K batches then
  run at once, by the same rule for when each leaves, so one batch's preparation overlaps
  another's compute; the price is K batches' memory, and batches a little less full.
- A sync method runs in a worker thread, an ``async def`` one on the runner's event loop.

Latency against throughput
--------------------------

- A lone input waits at most W ms for company (plus the rest of a batch already running): the
  price of batching at low load. W = 0, the default, adds no wait at all: an input leaves with
  whatever is queued as soon as no batch runs, so at low load each call gets one input and
  under load the calls fill up by themselves, from the inputs that arrived during the
  previous call.
- A larger N raises what one call can do (ResNet-50 in bf16 on an H200: about 200 images/s
  one at a time, about 11,400/s at batch 64), but each input waits for its whole batch, and
  memory grows with N. A positive W pays off when requests arrive spread out and a call costs
  about as much for one input as for N; keep it well below the time of one call.
- The server sends a replica at most its capacity of items at once (``--concurrency``,
  config.yaml's ``num_threads``), and an item holds its slot while its inputs wait here. For
  full batches from one-input requests the capacity must be at least N, better 2N (a batch
  running, the next one gathering).

Results, errors, cancellation
-----------------------------

Each caller gets its own results, in the order of its inputs. If the method raises, every input
of that batch fails with that exception. If it returns anything but a list (or tuple) of one
result per input, every input of the batch fails saying so. An element that is an
``Exception`` instance fails that input only. A method that reports token counts calls
``set_output_context`` once per element, in order. Failures are logged once per batch (per
element for failed elements). A caller cancelled while its inputs are queued takes them out of
the queue; inputs already in a running batch are computed, and their results dropped; nobody
else is affected.

Without a runner (``dispatch.predict`` and ``apredict`` called directly, as ``orchard model
local-test`` does) there is no queue: a request's own inputs are the batches, N at a time.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeAlias, TypeVar

from clarifai_grpc.grpc.api import resources_pb2

from orchard.runners.models import calls
from orchard.runners.models.calls import ArgumentError, Call
from orchard.runners.models.model_class import (
    MethodInfo,
    ModelClass,
    TokenCounts,
    begin_output_context,
    take_output_context,
)

__all__ = [
    "BatchResultError",
    "Batcher",
    "ModelBatchers",
    "apredict_calls",
    "apredict_inputs",
    "predict_calls",
    "predict_inputs",
    "split_results",
]

log = logging.getLogger("orchard.runners")

T = TypeVar("T")
R = TypeVar("R")
Output: TypeAlias = resources_pb2.Output


class BatchResultError(Exception):
    """What a batched call returned does not hold one result per input."""


def split_results(results: Any, n: int) -> list[Any]:
    """The outcome of each of the ``n`` inputs of a batch whose call returned ``results``: its
    element, or, when ``results`` is not a list or tuple of ``n`` elements, a
    :class:`BatchResultError` saying so (the same one for every input)."""
    if not isinstance(results, list | tuple):
        problem = BatchResultError(
            f"returned {type(results).__name__}, not a list, for a batch of {n} input(s); a "
            "batched method returns a list with one result per input, in order"
        )
        return [problem] * n
    if len(results) != n:
        problem = BatchResultError(
            f"returned {len(results)} result(s) for a batch of {n} input(s); a batched method "
            "returns one result per input, in order"
        )
        return [problem] * n
    return list(results)


def _raised(name: str, n: int, exc: Exception) -> list[Any]:
    log.error("batched method %s raised on a batch of %d input(s)", name, n, exc_info=exc)
    return [exc] * n


def _checked(name: str, results: Any, n: int) -> list[Any]:
    outcomes = split_results(results, n)
    if outcomes and isinstance(outcomes[0], BatchResultError):
        log.error("batched method %s %s", name, outcomes[0])
        return outcomes
    for index, outcome in enumerate(outcomes):
        if isinstance(outcome, Exception):
            log.error("batched method %s failed input %d of %d", name, index, n, exc_info=outcome)
    return outcomes


async def _settle(name: str, n: int, call: Callable[[], Awaitable[Any]]) -> list[Any]:
    """Run one batched call of ``n`` inputs; its outcome per input (a value or an exception),
    failures logged once."""
    try:
        results = await call()
    except Exception as exc:
        return _raised(name, n, exc)
    return _checked(name, results, n)


def _settle_sync(name: str, n: int, call: Callable[[], Any]) -> list[Any]:
    """:func:`_settle` for a blocking call."""
    try:
        results = call()
    except Exception as exc:
        return _raised(name, n, exc)
    return _checked(name, results, n)


# -- the batcher ---------------------------------------------------------------------------------


class Handle(Protocol):
    """What ``call_later`` returns: a timer that can be cancelled."""

    def cancel(self) -> None: ...


CallLater = Callable[[float, Callable[[], None]], Handle]


class _Caller:
    """One ``submit``: its future, and the outcomes of its inputs as they come."""

    __slots__ = ("future", "left", "outcomes")

    def __init__(self, future: asyncio.Future[list[Any]], n: int) -> None:
        self.future = future
        self.outcomes: list[Any] = [None] * n
        self.left = n


@dataclass(eq=False, slots=True)
class _Entry:
    caller: _Caller
    index: int
    value: Any
    since: float


class Batcher(Generic[T, R]):
    """A queue of inputs served in batches by ``run`` (values in, a list of results out).

    ``submit(values)`` queues values at once and returns a future of their outcomes, each a
    result of ``run`` or an ``Exception``; cancelling that future takes the values still
    queued out of the queue. A batch leaves when ``size`` values are queued or the oldest has
    waited ``wait_s`` seconds; at most ``concurrency`` batches run at a time (the policy is in
    the module's docstring). ``clock`` and ``call_later`` default to the running loop's ``time`` and
    ``call_later``. Use it from one event loop."""

    def __init__(
        self,
        run: Callable[[list[T]], Awaitable[Any]],
        size: int,
        wait_s: float,
        *,
        name: str = "batch",
        concurrency: int = 1,
        clock: Callable[[], float] | None = None,
        call_later: CallLater | None = None,
    ) -> None:
        if size < 1 or wait_s < 0 or concurrency < 1:
            raise ValueError(
                "a batcher needs size >= 1, wait_s >= 0 and concurrency >= 1, "
                f"got {size}, {wait_s}, {concurrency}"
            )
        self.size, self.wait_s, self.name, self.concurrency = size, wait_s, name, concurrency
        self._run = run
        self._clock, self._call_later = clock, call_later
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: deque[_Entry] = deque()
        self._batches: set[asyncio.Task[None]] = set()
        self._timer: Handle | None = None
        self._timer_at = 0.0

    @property
    def queued(self) -> int:
        """Values waiting for a batch."""
        return len(self._queue)

    @property
    def running(self) -> int:
        """Batches being computed."""
        return len(self._batches)

    def submit(self, values: Sequence[T]) -> asyncio.Future[list[R | Exception]]:
        """Queue ``values`` (together, in order); the future's result holds one outcome per
        value, in the same order."""
        loop = self._bind()
        future: asyncio.Future[list[Any]] = loop.create_future()
        if not values:
            future.set_result([])
            return future
        caller = _Caller(future, len(values))
        since = self._now()
        self._queue.extend(_Entry(caller, i, value, since) for i, value in enumerate(values))
        future.add_done_callback(self._withdraw)
        self._pump()
        return future

    # -- deciding when a batch leaves -----------------------------------------------------------

    def _bind(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._queue or self._batches:
                raise RuntimeError(f"batcher {self.name} is in use on another event loop")
            self._loop, self._timer = loop, None
        return loop

    def _now(self) -> float:
        if self._clock is not None:
            return self._clock()
        assert self._loop is not None
        return self._loop.time()

    def _full(self) -> bool:
        return len(self._batches) >= self.concurrency

    def _pump(self) -> None:
        """Start batches while fewer than ``concurrency`` run and one is due; keep the timer
        for the next one."""
        while not self._full() and self._queue and self._due():
            batch = self._take()
            if batch:
                self._start(batch)
        self._arm()

    def _due(self) -> bool:
        return len(self._queue) >= self.size or self._now() >= self._queue[0].since + self.wait_s

    def _take(self) -> list[_Entry]:
        batch: list[_Entry] = []
        while self._queue and len(batch) < self.size:
            entry = self._queue.popleft()
            if not entry.caller.future.done():  # cancelled, its withdrawal not yet run
                batch.append(entry)
        return batch

    def _arm(self) -> None:
        """A timer for the oldest queued value's deadline, while another batch may start (the
        end of a running batch pumps again)."""
        if self._full() or not self._queue:
            self._disarm()
            return
        at = self._queue[0].since + self.wait_s
        if self._timer is not None and self._timer_at == at:
            return
        self._disarm()
        self._timer_at = at
        delay = max(at - self._now(), 0.0)
        if self._call_later is not None:
            self._timer = self._call_later(delay, self._on_timer)
        else:
            assert self._loop is not None
            self._timer = self._loop.call_later(delay, self._on_timer)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        self._pump()

    def _withdraw(self, future: asyncio.Future[list[Any]]) -> None:
        """A cancelled caller's values leave the queue (those in a running batch stay)."""
        if not future.cancelled():
            return
        self._queue = deque(e for e in self._queue if e.caller.future is not future)
        self._pump()

    # -- running a batch ------------------------------------------------------------------------

    def _start(self, batch: list[_Entry]) -> None:
        assert self._loop is not None
        self._disarm()
        self._batches.add(self._loop.create_task(self._serve(batch), name=f"{self.name} batch"))

    async def _serve(self, batch: list[_Entry]) -> None:
        values = [entry.value for entry in batch]
        outcomes: list[Any] | None = None
        try:
            outcomes = await _settle(self.name, len(values), functools.partial(self._run, values))
        finally:
            self._batches.discard(asyncio.current_task())
            if outcomes is not None:
                _deliver(batch, outcomes)
                self._pump()
            else:  # stopped (the loop is closing): fail everything, so nothing waits forever
                log.warning("a batch of %s stopped before it finished", self.name)
                stopped = RuntimeError(f"batch of {self.name} stopped before it finished")
                _deliver([*batch, *self._queue], [stopped] * (len(batch) + len(self._queue)))
                self._queue.clear()
                self._disarm()


def _deliver(entries: list[_Entry], outcomes: list[Any]) -> None:
    for entry, outcome in zip(entries, outcomes, strict=True):
        caller = entry.caller
        if caller.future.done():  # cancelled: its result is dropped
            continue
        caller.outcomes[entry.index] = outcome
        caller.left -= 1
        if caller.left == 0:
            caller.future.set_result(caller.outcomes)


# -- model methods ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Produced:
    """One input's result, and the token counts the method set for it."""

    value: Any
    counts: TokenCounts | None


class ModelBatchers:
    """The batchers of one model instance: one per batched method, made on first use."""

    def __init__(
        self,
        model: ModelClass,
        *,
        clock: Callable[[], float] | None = None,
        call_later: CallLater | None = None,
    ) -> None:
        self.model = model
        self._clock, self._call_later = clock, call_later
        self._batchers: dict[str, Batcher[Call, Any]] = {}

    def batcher(self, info: MethodInfo) -> Batcher[Call, Any]:
        found = self._batchers.get(info.name)
        if found is None:
            assert info.batch is not None, f"{info.name} is not batched"
            found = Batcher(
                functools.partial(_acall, self.model, info),
                info.batch.size,
                info.batch.wait_s,
                name=_where(self.model, info),
                concurrency=info.batch.concurrency,
                clock=self._clock,
                call_later=self._call_later,
            )
            self._batchers[info.name] = found
        return found


async def apredict_inputs(
    model: ModelClass,
    info: MethodInfo,
    inputs: Sequence[resources_pb2.Input],
    params: dict[str, Any],
    batchers: ModelBatchers | None = None,
) -> list[Output]:
    """The outputs of a batched method's inputs: through ``batchers`` (the runner's queue)
    when given, else in batches of the request's own inputs."""
    decoded = [_decode(model, info, inp, params) for inp in inputs]
    ready = [d for d in decoded if isinstance(d, Call)]
    return _merge(decoded, await apredict_calls(model, info, ready, batchers))


def predict_inputs(
    model: ModelClass,
    info: MethodInfo,
    inputs: Sequence[resources_pb2.Input],
    params: dict[str, Any],
) -> list[Output]:
    """:func:`apredict_inputs` for a sync method called without an event loop."""
    decoded = [_decode(model, info, inp, params) for inp in inputs]
    ready = [d for d in decoded if isinstance(d, Call)]
    return _merge(decoded, predict_calls(model, info, ready))


async def apredict_calls(
    model: ModelClass,
    info: MethodInfo,
    decoded: Sequence[Call],
    batchers: ModelBatchers | None = None,
) -> list[Output]:
    """One output per decoded call, in order."""
    if batchers is not None:
        outcomes = await batchers.batcher(info).submit(decoded)
    else:
        outcomes = []
        for chunk in _chunks(decoded, info):
            call = functools.partial(_acall, model, info, chunk)
            outcomes += await _settle(_where(model, info), len(chunk), call)
    return [_output(model, info, c, o) for c, o in zip(decoded, outcomes, strict=True)]


def predict_calls(model: ModelClass, info: MethodInfo, decoded: Sequence[Call]) -> list[Output]:
    """:func:`apredict_calls` for a sync method, without a queue."""
    outcomes: list[Any] = []
    for chunk in _chunks(decoded, info):
        call = functools.partial(_call, model, info, chunk)
        outcomes += _settle_sync(_where(model, info), len(chunk), call)
    return [_output(model, info, c, o) for c, o in zip(decoded, outcomes, strict=True)]


def _decode(
    model: ModelClass, info: MethodInfo, inp: resources_pb2.Input, params: dict[str, Any]
) -> Call | Output:
    try:
        return calls.decode_input(info, inp, params)
    except ArgumentError as exc:
        return calls.argument_failure(type(model), info, exc)


def _merge(decoded: list[Call | Output], outputs: list[Output]) -> list[Output]:
    """Every input's output in input order: the argument failures and the batch's outputs."""
    produced = iter(outputs)
    return [next(produced) if isinstance(d, Call) else d for d in decoded]


def _chunks(decoded: Sequence[Call], info: MethodInfo) -> Iterator[list[Call]]:
    assert info.batch is not None
    size = info.batch.size
    for start in range(0, len(decoded), size):
        yield list(decoded[start : start + size])


def _columns(info: MethodInfo, batch: Sequence[Call]) -> dict[str, list[Any]]:
    """The keyword arguments of a batched call: per parameter, one element per input."""
    return {spec.name: [c.kwargs[spec.name] for c in batch] for spec in info.args}


async def _acall(model: ModelClass, info: MethodInfo, batch: Sequence[Call]) -> Any:
    method = getattr(model, info.name)
    begin_output_context()
    if not info.is_async:
        return _counted(await asyncio.to_thread(method, **_columns(info, batch)))
    result = method(**_columns(info, batch))
    return _counted(await result if inspect.isawaitable(result) else result)


def _call(model: ModelClass, info: MethodInfo, batch: Sequence[Call]) -> Any:
    begin_output_context()
    return _counted(getattr(model, info.name)(**_columns(info, batch)))


def _counted(results: Any) -> Any:
    """Each element with the token counts set for it (one per element, in order); anything
    but a list or tuple as it is, for :func:`split_results` to refuse."""
    if not isinstance(results, list | tuple):
        return results
    counted: list[Any] = []
    for value in results:
        counts = take_output_context()
        counted.append(value if isinstance(value, Exception) else _Produced(value, counts))
    return counted


def _output(model: ModelClass, info: MethodInfo, call: Call, outcome: Any) -> Output:
    cls = type(model)
    if isinstance(outcome, _Produced):
        begin_output_context(outcome.counts)
        return calls.value_output(cls, info, outcome.value, call.legacy)
    if isinstance(outcome, BatchResultError):
        return calls.failure_output(f"{_where(model, info)} {outcome}", str(outcome))
    return calls.method_failure(cls, info, outcome, logged=True)


def _where(model: ModelClass, info: MethodInfo) -> str:
    return f"{type(model).__name__}.{info.name}"
