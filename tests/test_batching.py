"""Dynamic batching: the batcher's policy (size bound, wait bound on a clock the test moves,
one batch at a time), per-input outcomes, cancellation; batched ModelClass methods, their
published signatures and definition errors; and requests served through the runner's request
adapter, in-process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2

from orchard import errors, work_protocol
from orchard.authoring import Concept, Image, ModelClass, Param, signatures
from orchard.codec.serializers import decode, encode_args
from orchard.runners.adapters import OrchardAdapter, adapter_for
from orchard.runners.batching import Batcher, BatchResultError, ModelBatchers, split_results
from orchard.runners.models import request_adapter
from orchard.runners.models.model_class import Batching, method_infos
from orchard.runners.runner import Runner, RunnerSettings
from orchard.runners.utils.method_signatures import build_field
from tests.fake_orchard import PAT, FakeOrchard, FakeStream, request

SC = status_code_pb2.StatusCode


class FakeTimers:
    """A clock that moves only when the test says, and the timers armed on it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[_Timer] = []
        self.armed = asyncio.Event()

    def clock(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(self.now + delay, callback)
        self.timers.append(timer)
        self.armed.set()
        return timer

    @property
    def deadlines(self) -> list[float]:
        return sorted(t.at for t in self.timers if not t.cancelled)

    def advance(self, seconds: float) -> None:
        """Move the clock; every timer due by then fires, in order."""
        self.now += seconds
        while due := sorted(
            (t for t in self.timers if not t.cancelled and t.at <= self.now), key=lambda t: t.at
        ):
            due[0].cancelled = True
            due[0].callback()


class _Timer:
    def __init__(self, at: float, callback: Callable[[], None]) -> None:
        self.at, self.callback, self.cancelled = at, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class Recorder:
    """A batched function: upper-cases each value, records each batch and when it started;
    with a ``gate``, each batch waits for it."""

    def __init__(self, gate: asyncio.Event | None = None) -> None:
        self.gate = gate
        self.batches: list[list[str]] = []
        self.started = asyncio.Event()
        self.times: list[float] = []

    async def __call__(self, values: list[str]) -> list[Any]:
        self.batches.append(list(values))
        self.times.append(asyncio.get_running_loop().time())
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        return [v.upper() for v in values]


def _batcher(run: Any, size: int, wait_s: float, timers: FakeTimers | None = None) -> Batcher:
    if timers is None:
        return Batcher(run, size, wait_s, name="Test.run")
    return Batcher(
        run, size, wait_s, name="Test.run", clock=timers.clock, call_later=timers.call_later
    )


async def _cancelled(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


class Caller:
    """A task awaiting ``batcher.submit(values)``, as a runner item's task does."""

    def __init__(self, batcher: Batcher, values: Sequence[str]) -> None:
        self.submitted = asyncio.Event()
        self.task = asyncio.create_task(self._call(batcher, values))

    async def _call(self, batcher: Batcher, values: Sequence[str]) -> list[Any]:
        future = batcher.submit(values)
        self.submitted.set()
        return await future

    @classmethod
    async def start(cls, batcher: Batcher, values: Sequence[str]) -> Caller:
        caller = cls(batcher, values)
        await caller.submitted.wait()
        return caller


# -- when a batch leaves ----------------------------------------------------------------------


async def test_a_batch_leaves_as_soon_as_it_is_full():
    timers, run = FakeTimers(), Recorder()
    batcher = _batcher(run, size=3, wait_s=10.0, timers=timers)
    first, second = batcher.submit(["a"]), batcher.submit(["b"])
    assert (batcher.queued, batcher.running, timers.deadlines) == (2, False, [10.0])
    third = batcher.submit(["c"])
    assert (batcher.queued, batcher.running, timers.deadlines) == (0, True, [])
    assert await asyncio.gather(first, second, third) == [["A"], ["B"], ["C"]]
    assert run.batches == [["a", "b", "c"]]
    assert timers.now == 0.0  # no time passed: the size, not the wait, sent it


async def test_a_batch_leaves_when_its_oldest_input_has_waited_the_bound():
    timers, run = FakeTimers(), Recorder()
    batcher = _batcher(run, size=4, wait_s=0.005, timers=timers)
    lone = batcher.submit(["a"])
    assert timers.deadlines == [0.005]  # the first input's arrival plus the wait
    timers.advance(0.004)
    assert (batcher.queued, batcher.running) == (1, False)
    later = batcher.submit(["b"])
    assert timers.deadlines == [0.005]  # the oldest input sets the deadline
    timers.advance(0.001)
    assert (batcher.queued, batcher.running) == (0, True)
    assert (await lone, await later) == (["A"], ["B"])
    assert run.batches == [["a", "b"]]


async def test_on_the_real_loop_a_lone_input_leaves_after_the_wait_and_not_before():
    run = Recorder()
    batcher = _batcher(run, size=8, wait_s=0.05)
    loop = asyncio.get_running_loop()
    before = loop.time()
    assert await asyncio.wait_for(batcher.submit(["a"]), timeout=10) == ["A"]
    assert run.batches == [["a"]]  # nothing else arrived: the wait alone sent it
    assert run.times[0] - before >= 0.05


async def test_one_batch_runs_at_a_time_and_the_next_gathers_meanwhile():
    gate = asyncio.Event()
    run = Recorder(gate)
    batcher = _batcher(run, size=8, wait_s=0.0)
    first = batcher.submit(["a"])  # no wait: leaves at once, alone
    assert batcher.running
    others = [batcher.submit([v]) for v in "bcd"]
    assert (batcher.queued, batcher.running) == (3, True)
    await run.started.wait()
    gate.set()
    assert await asyncio.gather(first, *others) == [["A"], ["B"], ["C"], ["D"]]
    assert run.batches == [["a"], ["b", "c", "d"]]


async def test_with_max_concurrent_batches_up_to_k_run_at_once_and_the_rest_gather():
    gate = asyncio.Event()
    run = Recorder(gate)
    batcher = Batcher(run, 2, 0.0, name="Test.run", concurrency=2)
    first = batcher.submit(["a"])  # leaves at once, alone
    second = batcher.submit(["b"])  # a second batch may run: leaves at once too
    assert (batcher.queued, batcher.running) == (0, 2)
    later = [batcher.submit([v]) for v in "cde"]  # both run: these gather
    assert (batcher.queued, batcher.running) == (3, 2)
    gate.set()
    assert await asyncio.gather(first, second, *later) == [["A"], ["B"], ["C"], ["D"], ["E"]]
    assert run.batches[:2] == [["a"], ["b"]]
    assert sorted(map(tuple, run.batches[2:])) == [("c", "d"), ("e",)]  # full first, in order
    assert batcher.running == 0


async def test_concurrent_batches_still_wait_for_company_up_to_the_bound():
    timers, gate = FakeTimers(), asyncio.Event()
    run = Recorder(gate)
    batcher = Batcher(
        run,
        4,
        5.0,
        name="Test.run",
        concurrency=2,
        clock=timers.clock,
        call_later=timers.call_later,
    )
    first = batcher.submit(["a"])
    assert (batcher.queued, batcher.running, timers.deadlines) == (1, 0, [5.0])
    timers.advance(5.0)  # the bound passed: it leaves alone, and a second slot stays free
    second = batcher.submit(["b"])
    assert (batcher.queued, batcher.running, timers.deadlines) == (1, 1, [10.0])
    gate.set()
    timers.advance(5.0)
    assert await asyncio.gather(first, second) == [["A"], ["B"]]


def test_max_concurrent_batches_reaches_the_batcher():
    class Pair(ModelClass):
        @ModelClass.method(batch_size=4, max_concurrent_batches=2)
        def f(self, x: list[str]) -> list[str]:
            return x

    assert method_infos(Pair)["f"].batch == Batching(4, 0.0, 2)
    assert ModelBatchers(Pair()).batcher(method_infos(Pair)["f"]).concurrency == 2


async def test_a_request_with_many_inputs_rides_in_one_batch_with_others():
    run = Recorder()
    batcher = _batcher(run, size=4, wait_s=10.0, timers=FakeTimers())
    many, one = batcher.submit(["a", "b", "c"]), batcher.submit(["d"])
    assert await asyncio.gather(many, one) == [["A", "B", "C"], ["D"]]
    assert run.batches == [["a", "b", "c", "d"]]


async def test_more_inputs_than_the_size_go_in_consecutive_batches_in_order():
    run = Recorder()
    batcher = _batcher(run, size=2, wait_s=0.0)
    assert await batcher.submit(list("abcde")) == list("ABCDE")
    assert run.batches == [["a", "b"], ["c", "d"], ["e"]]
    assert await batcher.submit([]) == []


# -- per-input outcomes --------------------------------------------------------------------------


async def test_a_raise_fails_every_input_of_the_batch_and_is_logged_once(caplog):
    async def run(values: list[str]) -> list[str]:
        raise ValueError("device lost")

    batcher = _batcher(run, size=3, wait_s=10.0, timers=FakeTimers())
    with caplog.at_level(logging.ERROR, logger="orchard.runners"):
        one, two = await asyncio.gather(batcher.submit(["a"]), batcher.submit(["b", "c"]))
    assert [str(e) for e in [*one, *two]] == ["device lost"] * 3
    assert all(isinstance(e, ValueError) for e in [*one, *two])
    assert [r.getMessage() for r in caplog.records] == [
        "batched method Test.run raised on a batch of 3 input(s)"
    ]


async def test_a_result_list_of_the_wrong_length_fails_every_input_saying_so():
    async def short(values: list[str]) -> list[str]:
        return values[1:]

    batcher = _batcher(short, size=3, wait_s=0.0)
    outcomes = await batcher.submit(["a", "b", "c"])
    assert all(isinstance(e, BatchResultError) for e in outcomes)
    assert str(outcomes[0]) == (
        "returned 2 result(s) for a batch of 3 input(s); a batched method returns one result "
        "per input, in order"
    )

    async def text(values: list[str]) -> str:
        return "".join(values)

    (wrong,) = await _batcher(text, size=3, wait_s=0.0).submit(["a"])
    assert isinstance(wrong, BatchResultError)
    assert str(wrong).startswith("returned str, not a list, for a batch of 1 input(s)")


async def test_an_exception_element_fails_that_input_only():
    async def run(values: list[str]) -> list[Any]:
        return [ValueError(f"cannot read {v}") if v == "bad" else v.upper() for v in values]

    batcher = _batcher(run, size=3, wait_s=10.0, timers=FakeTimers())
    mixed, fine = await asyncio.gather(batcher.submit(["a", "bad"]), batcher.submit(["c"]))
    assert mixed[0] == "A" and fine == ["C"]
    assert isinstance(mixed[1], ValueError) and str(mixed[1]) == "cannot read bad"


def test_split_results_pairs_results_with_inputs():
    assert split_results(("x", "y"), 2) == ["x", "y"]
    assert [type(e) for e in split_results(["x"], 2)] == [BatchResultError] * 2
    assert [type(e) for e in split_results(None, 1)] == [BatchResultError]


# -- cancellation --------------------------------------------------------------------------------


async def test_a_cancelled_caller_leaves_the_queue_and_the_deadline_moves():
    timers, run = FakeTimers(), Recorder()
    batcher = _batcher(run, size=4, wait_s=1.0, timers=timers)
    gone = await Caller.start(batcher, ["b", "c"])
    timers.advance(0.5)
    kept = batcher.submit(["a"])
    assert (batcher.queued, timers.deadlines) == (3, [1.0])
    await _cancelled(gone.task)
    assert (batcher.queued, timers.deadlines) == (1, [1.5])  # now the oldest is "a"
    timers.advance(1.0)
    assert await kept == ["A"]
    assert run.batches == [["a"]]


async def test_a_caller_cancelled_during_its_batch_loses_only_its_results():
    timers, gate = FakeTimers(), asyncio.Event()
    run = Recorder(gate)
    batcher = _batcher(run, size=2, wait_s=10.0, timers=timers)
    gone = await Caller.start(batcher, ["a"])
    kept = batcher.submit(["b"])
    await run.started.wait()  # the batch is inside the method
    await _cancelled(gone.task)
    gate.set()
    assert await kept == ["B"]
    assert run.batches == [["a", "b"]]
    after = batcher.submit(["c"])  # the batcher goes on
    timers.advance(10.0)
    assert await after == ["C"]


async def test_a_caller_split_across_batches_keeps_nothing_queued_when_cancelled():
    gate = asyncio.Event()
    run = Recorder(gate)
    batcher = _batcher(run, size=2, wait_s=0.0)
    gone = await Caller.start(batcher, ["a", "b", "c", "d"])
    await run.started.wait()
    assert batcher.queued == 2
    await _cancelled(gone.task)
    assert (batcher.queued, batcher.running) == (0, True)
    gate.set()
    assert await batcher.submit(["e"]) == ["E"]
    assert run.batches == [["a", "b"], ["e"]]


# -- batched ModelClass methods --------------------------------------------------------------


TOP = Param(1, "how many", min_value=1, max_value=5)


class PerItem(ModelClass):
    @ModelClass.method
    def classify(self, image: Image, top: int = TOP) -> list[Concept]:
        """Label an image."""
        return []


class Batched(ModelClass):
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    @ModelClass.method(batch_size=8, batch_wait_ms=5)
    def classify(self, image: list[Image], top: list[int] = TOP) -> list[list[Concept]]:
        """Label an image."""
        return [
            [Concept(f"size-{len(i.bytes or b'')}", 0.5)][:n]
            for i, n in zip(image, top, strict=True)
        ]

    @ModelClass.method(batch_size=4, batch_wait_ms=60_000)
    def shout(self, text: list[str], times: list[int] = 1) -> list[str | Exception]:
        self.calls.append(list(text))
        for index, word in enumerate(text):
            self.set_output_context(completion_tokens=index + 1)
            if word == "raise":
                raise RuntimeError("the whole batch failed")
        return [
            ValueError(f"no {t}") if t == "bad" else t.upper() * n
            for t, n in zip(text, times, strict=True)
        ]

    @ModelClass.method(batch_size=3, batch_wait_ms=60_000)
    async def whisper(self, text: list[str]) -> list[str]:
        await asyncio.sleep(0)
        self.calls.append(list(text))
        return [t.lower() for t in text]

    @ModelClass.method(batch_size=2)
    def short(self, text: list[str]) -> list[str]:
        return text[:1]

    @ModelClass.method
    def plain(self, text: str) -> str:
        return text


def test_the_published_signature_is_the_per_item_one():
    (per_item,) = signatures(PerItem)
    batched = {s.name: s for s in signatures(Batched)}
    assert batched["classify"] == per_item
    assert batched["classify"].SerializeToString() == per_item.SerializeToString()
    infos = method_infos(Batched)
    assert infos["classify"].batch == Batching(size=8, wait_ms=5.0)
    assert infos["whisper"].batch == Batching(size=3, wait_ms=60_000.0)
    assert infos["short"].batch == Batching(size=2, wait_ms=0.0)
    assert infos["plain"].batch is None
    assert infos["classify"].method_type == resources_pb2.RunnerMethodType.UNARY_UNARY
    # `list[str | Exception]`: an element may be an exception; clients see `str`
    assert batched["shout"].output_fields[0] == build_field("return", str)[0]
    assert [f.name for f in batched["shout"].input_fields] == ["text", "times"]


def test_the_decorator_keeps_its_plain_forms_and_overrides_keep_their_batching():
    class Child(Batched):
        def shout(self, text: list[str], times: list[int] = 1) -> list[str]:
            return text

    class Bare(ModelClass):
        @ModelClass.method()
        def predict(self, text: str) -> str:
            return text

    assert method_infos(Child)["shout"].batch == Batching(size=4, wait_ms=60_000.0)
    assert method_infos(Bare)["predict"].batch is None
    assert Batched().plain("x") == "x"


def _define(body: str) -> None:
    namespace = {"ModelClass": ModelClass, "Iterator": Iterator}
    exec(f"class Bad(ModelClass):\n{body}", namespace)


BATCHING_ERRORS = [
    (
        "    @ModelClass.method(batch_size=4)\n    def f(self, x: list[str]) -> Iterator[str]:\n"
        "        yield from x",
        r"Bad\.f yields its results \(a streaming method\) and asks for batch_size=4; only "
        r"unary methods can be batched: drop batch_size",
    ),
    (
        "    @ModelClass.method(batch_size=4)\n    def f(self, x: list[str]) -> Iterator[str]:\n"
        "        return iter(x)",
        r"the return of Bad\.f is a stream, and Bad\.f asks for batch_size=4; only unary "
        r"methods can be batched",
    ),
    (
        "    @ModelClass.method(batch_size=4)\n"
        "    def f(self, x: Iterator[str]) -> list[str]:\n        return []",
        r"parameter 'x' of Bad\.f is a stream, and Bad\.f asks for batch_size=4",
    ),
    (
        "    @ModelClass.method(batch_size=4)\n    def f(self, x: str) -> list[str]:\n"
        "        return []",
        r"parameter 'x' of Bad\.f is annotated str, but a batched method \(batch_size=4\) takes "
        r"a list per parameter .* annotate it list\[T\].*`x: list\[str\]`",
    ),
    (
        "    @ModelClass.method(batch_size=4)\n    def f(self, x: list[str]) -> str:\n"
        "        return ''",
        r"the return of Bad\.f is annotated str, .* \(e\.g\. `-> list\[str\]`\)",
    ),
    (
        "    @ModelClass.method(batch_size=4)\n    def f(self) -> list[str]:\n        return []",
        r"Bad\.f asks for batch_size=4 but takes no parameters",
    ),
    (
        "    @ModelClass.method(batch_size=4)\n    def f(self, x) -> list[str]:\n        return []",
        r"parameter 'x' of Bad\.f has no type annotation",
    ),
    (
        "    @ModelClass.method(batch_size=0)\n    def f(self, x: list[str]) -> list[str]:\n"
        "        return x",
        r"batch_size=0\): batch_size is the most inputs per call, a whole number of at least 1",
    ),
    (
        "    @ModelClass.method(batch_size=True)\n    def f(self, x: list[str]) -> list[str]:\n"
        "        return x",
        r"batch_size=True\)",
    ),
    (
        "    @ModelClass.method(batch_size=2, batch_wait_ms=-1)\n"
        "    def f(self, x: list[str]) -> list[str]:\n        return x",
        r"batch_wait_ms=-1\): batch_wait_ms is how long .* 0 or more",
    ),
    (
        "    @ModelClass.method(batch_wait_ms=5)\n    def f(self, x: str) -> str:\n"
        "        return x",
        r"batch_wait_ms=5\) needs batch_size too",
    ),
    (
        "    @ModelClass.method(max_concurrent_batches=2)\n    def f(self, x: str) -> str:\n"
        "        return x",
        r"max_concurrent_batches=2\) needs batch_size too",
    ),
    (
        "    @ModelClass.method(batch_size=2, max_concurrent_batches=0)\n"
        "    def f(self, x: list[str]) -> list[str]:\n        return x",
        r"max_concurrent_batches=0\): how many batches .* at least 1",
    ),
]


@pytest.mark.parametrize(("body", "message"), BATCHING_ERRORS)
def test_batching_errors_name_the_method_and_the_fix(body, message):
    with pytest.raises(errors.ModelInvalid, match=message):
        _define(body)


# -- through the runner's request adapter ----------------------------------------------------


def _input(method: str, **kwargs: Any) -> resources_pb2.Input:
    sig = {s.name: s for s in signatures(Batched)}[method]
    inp = resources_pb2.Input()
    encode_args(sig.input_fields, kwargs, inp.data)
    inp.data.metadata["_method_name"] = method
    return inp


def _request(method: str, *texts: str, **kwargs: Any) -> service_pb2.PostModelOutputsRequest:
    inputs = [_input(method, text=t, **kwargs) for t in texts]
    return service_pb2.PostModelOutputsRequest(inputs=inputs)


def _texts(response: service_pb2.MultiOutputResponse) -> list[str]:
    field = build_field("return", str)[0]
    return [
        decode(field, o.data.parts[0].data) if o.status.code == SC.SUCCESS else o.status.details
        for o in response.outputs
    ]


async def test_concurrent_requests_are_served_by_fewer_calls_with_their_own_results():
    model = Batched()
    adapter = adapter_for(model)
    assert isinstance(adapter, OrchardAdapter)
    words = [f"w{i}" for i in range(8)]
    responses = await asyncio.gather(*(adapter.predict(_request("shout", w)) for w in words))
    assert [_texts(r) for r in responses] == [[w.upper()] for w in words]
    assert model.calls == [words[:4], words[4:]]  # 8 requests, 2 calls
    assert [r.outputs[0].completion_tokens for r in responses] == [1, 2, 3, 4] * 2


async def test_a_many_input_request_and_per_input_failures_through_the_adapter():
    model = Batched()
    adapter = adapter_for(model)
    many = _request("shout", "a", "bad", "c")
    mixed, single = await asyncio.gather(
        adapter.predict(many), adapter.predict(_request("shout", "d", times=2))
    )
    assert model.calls == [["a", "bad", "c", "d"]]
    assert mixed.status.code == SC.MIXED_STATUS
    assert _texts(mixed) == ["A", "no bad", "C"]
    assert mixed.outputs[1].status.description == "Batched.shout raised ValueError: no bad"
    assert single.status.code == SC.SUCCESS and _texts(single) == ["DD"]
    failed = await asyncio.gather(
        *(adapter.predict(_request("shout", w)) for w in ["x", "y", "z", "raise"])
    )
    assert all(r.status.code == SC.FAILURE for r in failed)
    assert {r.outputs[0].status.description for r in failed} == {
        "Batched.shout raised RuntimeError: the whole batch failed"
    }
    (short,) = await asyncio.gather(adapter.predict(_request("short", "p", "q")))
    assert [o.status.description for o in short.outputs] == [
        "Batched.short returned 1 result(s) for a batch of 2 input(s); a batched method "
        "returns one result per input, in order"
    ] * 2


async def test_bad_arguments_fail_their_input_and_never_join_the_batch():
    model = Batched()
    adapter = adapter_for(model)
    bad = _input("shout", text="b")
    del bad.data.parts[:]
    request = service_pb2.PostModelOutputsRequest(
        inputs=[_input("shout", text="a"), bad, _input("shout", text="c")]
    )
    more = _request("shout", "d", "e")
    response, rest = await asyncio.gather(adapter.predict(request), adapter.predict(more))
    assert model.calls == [["a", "c", "d", "e"]]
    assert [o.status.code for o in response.outputs] == [SC.SUCCESS, SC.FAILURE, SC.SUCCESS]
    assert "missing required argument 'text'" in response.outputs[1].status.description
    assert _texts(rest) == ["D", "E"]


async def test_async_batched_methods_run_on_the_loop_and_lone_requests_wait_the_bound():
    timers = FakeTimers()
    model = Batched()
    adapter = OrchardAdapter(
        model, ModelBatchers(model, clock=timers.clock, call_later=timers.call_later)
    )
    lone = asyncio.create_task(adapter.predict(_request("whisper", "A")))
    await timers.armed.wait()  # queued, its deadline set
    assert timers.deadlines == [60.0] and model.calls == []
    timers.advance(60.0)
    assert _texts(await lone) == ["a"]
    three = await asyncio.gather(*(adapter.predict(_request("whisper", w)) for w in "XYZ"))
    assert [_texts(r) for r in three] == [["x"], ["y"], ["z"]]
    assert model.calls == [["A"], ["X", "Y", "Z"]]


async def test_images_and_params_reach_a_batched_method_one_element_per_input():
    adapter = adapter_for(Batched())
    images = [_input("classify", image=Image(bytes=b)) for b in (b"xyz", b"ab")]
    response = await adapter.predict(service_pb2.PostModelOutputsRequest(inputs=images))
    field = build_field("return", list[Concept])[0]
    assert [decode(field, o.data.parts[0].data) for o in response.outputs] == [
        [Concept("size-3", 0.5)],
        [Concept("size-2", 0.5)],
    ]
    bad = _input("classify", image=Image(bytes=b"x"), top=9)
    too_many = await adapter.predict(service_pb2.PostModelOutputsRequest(inputs=[bad]))
    assert too_many.outputs[0].status.description == (
        "bad arguments for Batched.classify: argument 'top': 9 is above max_value 5"
    )


async def test_generate_serves_a_batched_method_as_a_stream_of_one():
    model = Batched()
    adapter = adapter_for(model)
    responses = [r async for r in adapter.generate(_request("short", "only"))]
    assert [_texts(r) for r in responses] == [["only"]]


def test_without_a_runner_a_request_is_batched_on_its_own_inputs():
    model = Batched()
    response = request_adapter.predict(model, _request("shout", *"abcdef"))
    assert _texts(response) == list("ABCDEF")
    assert model.calls == [list("abcd"), list("ef")]
    (generated,) = request_adapter.generate(model, _request("shout", "g"))
    assert _texts(generated) == ["G"]
    asynced = request_adapter.predict(model, _request("whisper", *"PQRS"))
    assert _texts(asynced) == list("pqrs")
    assert model.calls[-2:] == [list("PQR"), ["S"]]


# -- through a runner, against the fake server ---------------------------------------------------


async def _ends(stream: FakeStream, *item_ids: str) -> dict[str, list[Any]]:
    """Each item's outputs, up to the end of every one of ``item_ids`` (in any order)."""
    outputs: dict[str, list[Any]] = {i: [] for i in item_ids}
    ended: set[str] = set()
    while ended != set(item_ids):
        message = await stream.next()
        outputs[message.runner_item_id].extend(
            o.multi_output_response for o in message.runner_item_outputs
        )
        if message.status.code == SC.RUNNER_STREAM_END:
            ended.add(message.runner_item_id)
    return outputs


async def test_a_runner_batches_concurrent_items_and_a_cancelled_one_leaves_the_queue():
    fake = await FakeOrchard().start()
    timers, model = FakeTimers(), Batched()
    batchers = ModelBatchers(model, clock=timers.clock, call_later=timers.call_later)
    settings = RunnerSettings(server=fake.target, pat=PAT, runner_id="runner-1", capacity=8)
    running = asyncio.create_task(Runner(OrchardAdapter(model, batchers), settings).run())
    try:
        stream = await fake.next_stream()
        work_protocol.read_hello(await stream.next())
        start = [
            work_protocol.start(w, work_protocol.UNARY, request(Batched, "shout", text=w))
            for w in "abc"
        ]
        await stream.send(*start)
        await timers.armed.wait()  # the first input is queued (batch_size 4: it waits)
        queue = batchers.batcher(method_infos(Batched)["shout"])
        assert (queue.queued, model.calls) == (3, [])
        await stream.send(work_protocol.control("b", SC.RUNNER_ITEM_CANCELLED))
        assert (await _ends(stream, "b"))["b"] == []
        assert queue.queued == 2
        more = [
            work_protocol.start(w, work_protocol.UNARY, request(Batched, "shout", text=w))
            for w in "de"
        ]
        await stream.send(*more)
        outputs = await _ends(stream, "a", "c", "d", "e")
        assert {i: [_texts(r) for r in rs] for i, rs in outputs.items()} == {
            i: [[i.upper()]] for i in "acde"
        }
        assert model.calls == [["a", "c", "d", "e"]]
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await fake.stop()
