"""The runner, in-process, against a fake server that implements only ``ProcessRunnerItems``
(tests/fake_orchard.py; the fake stands for the Orchard server, this tests the layer above
it): the hello, the three call shapes, capacity, cancellation, failures, output size,
reconnects, refusal, giving up on a gone server, and the drain. Models: the echo example and a
probe model written into tmp_path whose calls the test holds and watches."""

from __future__ import annotations

import asyncio
import subprocess
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from clarifai_grpc.grpc.api import service_pb2

from orchard import work_protocol
from orchard.packaging.inspect import load_model_class
from orchard.runners.adapters import (
    OfficialAdapter,
    OrchardAdapter,
    adapter_for,
    overall_status,
)
from orchard.runners.health import LIVENESS, READINESS, HealthServer
from orchard.runners.items import ENVELOPE_BYTES, fit
from orchard.runners.models import calls
from orchard.runners.runner import Backoff, Exit, Runner, RunnerSettings
from orchard.runners.work_stream import _coalesced
from tests.fake_orchard import (
    EXAMPLES,
    PAT,
    SC,
    FakeOrchard,
    FakeStream,
    eventually,
    request,
    stream_item,
    text_of,
)
from tests.runner_models import PROBE_SOURCE, Hooks, write_package
from tests.runner_process import banned_imports_command

Launch = Callable[..., tuple[Runner, "asyncio.Task[Exit]"]]
WAIT = 20.0


@pytest.fixture
async def fake() -> AsyncIterator[FakeOrchard]:
    server = await FakeOrchard().start()
    yield server
    await server.stop()


@pytest.fixture
async def hooks() -> AsyncIterator[Hooks]:
    """Released at the end, so that no model call is left holding a worker thread."""
    made = Hooks()
    yield made
    made.release.set()


@pytest.fixture(scope="module")
def echo_cls() -> type:
    return load_model_class(EXAMPLES / "echo", stub_missing=False)


@pytest.fixture
def probe(tmp_path: Path, hooks: Hooks) -> Any:
    cls = load_model_class(write_package(tmp_path, "probe", PROBE_SOURCE), stub_missing=False)
    model = cls()
    model.load_model()
    model.hooks = hooks
    return model


@pytest.fixture
async def launch(fake: FakeOrchard) -> AsyncIterator[Launch]:
    """Start a Runner on the loop; every one started is cancelled at the end."""
    tasks: list[asyncio.Task[Exit]] = []

    def start(model: Any, **overrides: Any) -> tuple[Runner, asyncio.Task[Exit]]:
        fields: dict[str, Any] = {
            "server": fake.target,
            "pat": PAT,
            "runner_id": "runner-1",
            "capacity": 2,
            "user_id": "alice",
            "nodepool_id": "np-1",
            "compute_cluster_id": "cc-1",
            "replica_id": "replica-1",
            **overrides,
        }
        runner = Runner(adapter_for(model), RunnerSettings(**fields))
        task = asyncio.create_task(runner.run())
        tasks.append(task)
        return runner, task

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _connected(fake: FakeOrchard) -> tuple[FakeStream, work_protocol.Hello]:
    stream = await fake.next_stream()
    return stream, work_protocol.read_hello(await stream.next())


# -- the hello and the three call shapes ------------------------------------------------------


async def test_hello_says_who_the_runner_is_and_its_capacity(fake, launch, echo_cls):
    launch(echo_cls(), capacity=3)
    stream, hello = await _connected(fake)
    assert hello == work_protocol.Hello("runner-1", "np-1", "cc-1", "replica-1", 3, "alice")
    assert stream.metadata["authorization"] == f"Key {PAT}"


async def test_unary_item_gets_one_output_then_its_end(fake, launch, echo_cls):
    launch(echo_cls())
    stream, _ = await _connected(fake)
    await stream.send(
        work_protocol.start("i1", work_protocol.UNARY, request(echo_cls, "predict", text="hi"))
    )
    responses = await stream.until_end_of("i1")
    assert [text_of(r) for r in responses] == ["hi"]


async def test_generate_item_streams_outputs_then_its_end(fake, launch, echo_cls):
    launch(echo_cls())
    stream, _ = await _connected(fake)
    generate = request(echo_cls, "generate", text="one two three")
    await stream.send(work_protocol.start("g1", work_protocol.SERVER_STREAM, generate))
    responses = await stream.until_end_of("g1")
    assert [text_of(r) for r in responses] == ["one ", "two ", "three"]


async def test_stream_item_takes_next_requests_until_input_end(fake, launch, echo_cls):
    launch(echo_cls())
    stream, _ = await _connected(fake)
    first = request(echo_cls, "stream", input_iterator="a")
    await stream.send(work_protocol.start("s1", work_protocol.BIDI, first))
    (output,) = (await stream.next()).runner_item_outputs
    assert text_of(output.multi_output_response) == "a"  # sent before the input ended
    for word in ("b", "c"):
        later = stream_item(echo_cls, "stream", input_iterator=word)
        await stream.send(work_protocol.next_request("s1", later))
    await stream.send(work_protocol.control("s1", SC.RUNNER_STREAM_END))
    responses = await stream.until_end_of("s1")
    assert [text_of(r) for r in responses] == ["b", "c"]


async def test_items_of_every_shape_interleave_on_one_stream(fake, launch, echo_cls):
    launch(echo_cls(), capacity=4)
    stream, _ = await _connected(fake)
    await stream.send(
        work_protocol.start("u", work_protocol.UNARY, request(echo_cls, "predict", text="x")),
        work_protocol.start(
            "g", work_protocol.SERVER_STREAM, request(echo_cls, "generate", text="y z")
        ),
    )
    ends: set[str] = set()
    while ends != {"u", "g"}:
        message = await stream.next()
        if message.status.code == SC.RUNNER_STREAM_END:
            ends.add(message.runner_item_id)
        else:
            assert message.runner_item_id not in ends  # outputs come before their end


async def test_an_unsupported_method_type_fails_the_item(fake, launch, echo_cls):
    launch(echo_cls())
    stream, _ = await _connected(fake)
    streaming_unary = service_pb2.RunnerItem(
        id="x1", post_model_outputs_request=request(echo_cls, "predict", text="hi")
    )
    streaming_unary.processing_info.runner_method_type = 3  # STREAMING_UNARY
    await stream.send(streaming_unary)
    (response,) = await stream.until_end_of("x1")
    assert response.status.code == SC.FAILURE
    assert "runner method type 3 is not served" in response.status.description


# -- capacity, cancellation, failures ------------------------------------------------------------


async def test_at_most_capacity_items_run_at_once(fake, launch, probe, hooks):
    runner, _ = launch(probe, capacity=2)
    stream, _ = await _connected(fake)
    cls = type(probe)
    for key in ("k1", "k2", "k3"):
        await stream.send(
            work_protocol.start(key, work_protocol.UNARY, request(cls, "slow", key=key))
        )
    await eventually(lambda: hooks.count() == 2 and runner.waiting == 1, "2 running, 1 waiting")
    assert hooks.count() == 2 and runner.running == 2
    hooks.release.set()
    ends: set[str] = set()
    while len(ends) < 3:
        message = await stream.next()
        if message.status.code == SC.RUNNER_STREAM_END:
            ends.add(message.runner_item_id)
    assert sorted(hooks.keys) == ["k1", "k2", "k3"]
    assert runner.running == runner.waiting == 0


async def test_cancel_ends_the_item_and_closes_a_sync_generator_after_its_step(
    fake, launch, probe, hooks
):
    runner, _ = launch(probe)
    stream, _ = await _connected(fake)
    ticks = request(type(probe), "ticks", text="tick")
    await stream.send(work_protocol.start("t1", work_protocol.SERVER_STREAM, ticks))
    await stream.next()  # the first tick; the next step now waits in a worker thread
    await stream.send(work_protocol.control("t1", SC.RUNNER_ITEM_CANCELLED))
    assert await stream.until_end_of("t1") == []  # the end comes without waiting for the step
    assert not hooks.closed.is_set()
    hooks.release.set()  # the step returns; then the generator is closed
    assert await asyncio.to_thread(hooks.closed.wait, WAIT)
    assert runner.running == 0


async def test_cancel_reaches_an_async_generator(fake, launch, probe, hooks):
    launch(probe)
    stream, _ = await _connected(fake)
    aticks = request(type(probe), "aticks", text="tick")
    await stream.send(work_protocol.start("a1", work_protocol.SERVER_STREAM, aticks))
    await stream.next()
    await stream.send(work_protocol.control("a1", SC.RUNNER_ITEM_CANCELLED))
    assert await stream.until_end_of("a1") == []
    assert hooks.closed.is_set()  # its finally ran before the end was sent


async def test_cancel_of_a_stream_item_waiting_for_its_next_input(fake, launch, probe, hooks):
    runner, _ = launch(probe)
    stream, _ = await _connected(fake)
    upper = request(type(probe), "upper", chunks="a")
    await stream.send(work_protocol.start("u1", work_protocol.BIDI, upper))
    await stream.next()  # "A"; the sync method now waits in a thread for the next input
    await stream.send(work_protocol.control("u1", SC.RUNNER_ITEM_CANCELLED))
    assert await stream.until_end_of("u1") == []
    assert await asyncio.to_thread(hooks.closed.wait, WAIT)
    await eventually(lambda: runner.running == 0, "the slot to be free")


async def test_a_failing_method_fails_its_output_and_the_runner_keeps_serving(fake, launch, probe):
    launch(probe)
    stream, _ = await _connected(fake)
    cls = type(probe)
    await stream.send(
        work_protocol.start("f1", work_protocol.UNARY, request(cls, "fail", text="boom"))
    )
    (failed,) = await stream.until_end_of("f1")
    assert failed.status.code == SC.FAILURE
    assert "failed on purpose: boom" in failed.outputs[0].status.description
    await stream.send(
        work_protocol.start("e1", work_protocol.UNARY, request(cls, "echo", text="still"))
    )
    assert [text_of(r) for r in await stream.until_end_of("e1")] == ["still"]


async def test_an_output_over_the_size_limit_is_replaced_by_a_failure(fake, launch, probe):
    launch(probe, max_output_bytes=1000)
    stream, _ = await _connected(fake)
    cls = type(probe)
    await stream.send(
        work_protocol.start("b1", work_protocol.UNARY, request(cls, "big", size=5000))
    )
    (response,) = await stream.until_end_of("b1")
    assert response.status.code == SC.FAILURE
    assert "over the runner's limit of 1000 bytes" in response.status.description
    await stream.send(work_protocol.start("b2", work_protocol.UNARY, request(cls, "big", size=10)))
    (small,) = await stream.until_end_of("b2")
    assert small.status.code == SC.SUCCESS


# -- the connection: reconnects, refusal, a gone server ------------------------------------------


async def test_reconnects_after_the_server_restarts_and_cancels_what_it_held(
    fake, launch, probe, hooks
):
    runner, _ = launch(probe)
    stream, _ = await _connected(fake)
    cls = type(probe)
    await stream.send(
        work_protocol.start("a1", work_protocol.SERVER_STREAM, request(cls, "aticks", text="t"))
    )
    await stream.next()
    port = fake.port
    await fake.stop()
    await asyncio.to_thread(hooks.closed.wait, WAIT)  # the held item was cancelled
    await fake.start()
    assert fake.port == port
    stream, hello = await _connected(fake)
    assert hello.runner_id == "runner-1"
    await eventually(lambda: runner.connected, "the runner to reconnect")
    await stream.send(
        work_protocol.start("e1", work_protocol.UNARY, request(cls, "echo", text="back"))
    )
    assert [text_of(r) for r in await stream.until_end_of("e1")] == ["back"]


async def test_gives_up_when_the_server_stays_unreachable(fake, launch, echo_cls):
    await fake.stop()
    _, task = launch(echo_cls(), server_gone_grace=0.3)
    assert await asyncio.wait_for(task, WAIT) is Exit.SERVER_GONE


async def test_a_refused_pat_ends_the_run(fake, launch, echo_cls):
    _, task = launch(echo_cls(), pat="wrong")
    assert await asyncio.wait_for(task, WAIT) is Exit.REFUSED


async def test_an_in_band_refusal_ends_the_run(fake, launch, echo_cls):
    _, task = launch(echo_cls())
    stream, _ = await _connected(fake)
    refusal = work_protocol.Incoming()
    refusal.status.code = SC.RUNNER_DOES_NOT_EXIST
    refusal.status.description = "runner 'runner-1' not found"
    await stream.send_message(refusal)
    assert await asyncio.wait_for(task, WAIT) is Exit.REFUSED


# -- the drain ------------------------------------------------------------------------------------


async def test_drain_finishes_held_items_refuses_new_ones_and_closes_the_stream(
    fake, launch, probe, hooks
):
    runner, task = launch(probe)
    stream, _ = await _connected(fake)
    cls = type(probe)
    await stream.send(
        work_protocol.start("k1", work_protocol.UNARY, request(cls, "slow", key="k1"))
    )
    await eventually(lambda: hooks.count() == 1, "the item to start")
    runner.stop()
    draining = await stream.next()
    assert draining == work_protocol.draining()
    assert not runner.ready
    await stream.send(
        work_protocol.start("k2", work_protocol.UNARY, request(cls, "slow", key="k2"))
    )
    refused = await stream.next()
    assert refused.runner_item_id == "k2" and refused.status.code == SC.RUNNER_NEEDS_RETRY
    hooks.release.set()
    assert [text_of(r) for r in await stream.until_end_of("k1")] == ["k1"]
    await stream.wait_closed()
    assert await asyncio.wait_for(task, WAIT) is Exit.DRAINED
    assert hooks.keys == ["k1"]


async def test_the_drain_timeout_cancels_what_is_left(fake, launch, probe, hooks):
    runner, task = launch(probe, drain_timeout=0.2)
    stream, _ = await _connected(fake)
    cls = type(probe)
    await stream.send(
        work_protocol.start("k1", work_protocol.UNARY, request(cls, "slow", key="k1"))
    )
    await eventually(lambda: hooks.count() == 1, "the item to start")
    runner.stop()
    assert await stream.next() == work_protocol.draining()
    assert await stream.until_end_of("k1") == []  # cancelled: an end without outputs
    assert await asyncio.wait_for(task, WAIT) is Exit.DRAINED


async def test_stop_while_disconnected_returns_at_once(fake, launch, echo_cls):
    await fake.stop()
    runner, task = launch(echo_cls())
    runner.stop()
    assert await asyncio.wait_for(task, WAIT) is Exit.DRAINED


# -- a model on the official SDK's ModelClass (a stand-in here; the real one is in the e2e test)


def _official_model() -> Any:
    """A class whose base looks like the official ModelClass, with its three wrappers."""
    base = type("ModelClass", (), {"__module__": "clarifai.runners.models.model_class"})

    def respond(text: str) -> service_pb2.MultiOutputResponse:
        response = service_pb2.MultiOutputResponse()
        response.status.code = SC.SUCCESS  # the runner recomputes it from the outputs
        output = response.outputs.add()
        output.status.code = SC.SUCCESS
        output.data.parts.add(id="return").data.string_value = text
        return response

    class Official(base):  # type: ignore[valid-type, misc]
        def __init__(self) -> None:
            self.closed = threading.Event()

        def predict_wrapper(self, request: Any) -> Any:
            return respond(request.inputs[0].data.text.raw.upper())

        def generate_wrapper(self, request: Any) -> Any:
            for word in request.inputs[0].data.text.raw.split():
                yield respond(word)

        def stream_wrapper(self, request_iterator: Any) -> Any:
            try:
                for request in request_iterator:
                    yield respond(request.inputs[0].data.text.raw)
            finally:
                self.closed.set()

    return Official()


def _text_request(text: str) -> service_pb2.PostModelOutputsRequest:
    request = service_pb2.PostModelOutputsRequest()
    request.inputs.add().data.text.raw = text
    return request


async def test_an_official_model_is_served_through_its_wrappers_in_threads(fake, launch):
    model = _official_model()
    assert isinstance(adapter_for(model), OfficialAdapter)
    launch(model)
    stream, _ = await _connected(fake)
    await stream.send(work_protocol.start("p", work_protocol.UNARY, _text_request("hi")))
    assert [text_of(r) for r in await stream.until_end_of("p")] == ["HI"]
    await stream.send(work_protocol.start("g", work_protocol.SERVER_STREAM, _text_request("a b")))
    assert [text_of(r) for r in await stream.until_end_of("g")] == ["a", "b"]
    await stream.send(work_protocol.start("s", work_protocol.BIDI, _text_request("x")))
    await stream.send(work_protocol.next_request("s", _text_request("y")))
    for expected in ("x", "y"):
        (output,) = (await stream.next()).runner_item_outputs
        assert text_of(output.multi_output_response) == expected
    await stream.send(work_protocol.control("s", SC.RUNNER_ITEM_CANCELLED))
    assert await stream.until_end_of("s") == []
    assert await asyncio.to_thread(model.closed.wait, WAIT)


# -- pure parts -----------------------------------------------------------------------------------


def test_backoff_doubles_to_the_maximum_with_jitter():
    low = Backoff(0.1, 5.0, rng=lambda: 0.0)
    assert [round(low.next(), 3) for _ in range(8)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.5, 2.5]
    high = Backoff(0.1, 5.0, rng=lambda: 0.999999)
    delays = [high.next() for _ in range(9)]
    assert delays[0] == pytest.approx(0.1) and delays[-1] == pytest.approx(5.0)
    high.reset()
    assert high.next() == pytest.approx(0.1)


def test_item_kinds_follow_the_protocol():
    req = service_pb2.PostModelOutputsRequest()
    kinds = [
        work_protocol.kind_of(work_protocol.start("i", work_protocol.UNARY, req)),
        work_protocol.kind_of(work_protocol.next_request("i", req)),
        work_protocol.kind_of(work_protocol.control("i", SC.RUNNER_STREAM_END)),
        work_protocol.kind_of(work_protocol.control("i", SC.RUNNER_ITEM_CANCELLED)),
        work_protocol.kind_of(service_pb2.RunnerItem(id="i")),
    ]
    assert [k.value for k in kinds] == ["start", "next", "input end", "cancel", "other"]


def test_only_a_failure_status_without_items_is_a_refusal():
    assert work_protocol.refusal(work_protocol.Incoming()) is None
    assert work_protocol.refusal(work_protocol.items(service_pb2.RunnerItem(id="i"))) is None
    refusal = work_protocol.Incoming()
    refusal.status.code = SC.CONN_KEY_INVALID
    refusal.status.description = "bad key"
    assert work_protocol.refusal(refusal) == "bad key"


def test_fit_replaces_only_outputs_over_the_limit():
    response = calls.unary_response([calls.failure_output("x" * 100)])
    assert fit(response, 10_000) is response
    assert fit(response, 10).status.code == SC.FAILURE


def test_fit_leaves_room_for_the_message_around_the_output():
    response = calls.unary_response([calls.failure_output("x" * 100)])
    limit = response.ByteSize() + ENVELOPE_BYTES
    assert fit(response, limit) is response
    assert fit(response, limit - 1).status.code == SC.FAILURE
    assert work_protocol.item_end("i" * 64, response).ByteSize() <= limit


def test_coalescing_never_makes_a_message_over_the_limit():
    chunk = calls.unary_response([calls.failure_output("x" * 1000)])
    batch = [work_protocol.output("item", chunk) for _ in range(10)] + [
        work_protocol.item_end("item")
    ]
    one = batch[0].ByteSize()
    assert len(_coalesced([m.__deepcopy__() for m in batch], 100 * one)) == 1
    merged = _coalesced(batch, 3 * one)
    assert [len(m.runner_item_outputs) for m in merged] == [3, 3, 3, 1]
    assert merged[-1].status.code == SC.RUNNER_STREAM_END
    assert all(m.ByteSize() <= 3 * one for m in merged)


def test_official_responses_get_the_status_their_outputs_add_up_to():
    ok, bad = calls.failure_output("x"), calls.failure_output("y")
    ok.status.code = SC.SUCCESS
    mixed = service_pb2.MultiOutputResponse(outputs=[ok, bad])
    mixed.status.code = SC.SUCCESS
    assert overall_status(mixed).status.code == SC.MIXED_STATUS
    failed = service_pb2.MultiOutputResponse(outputs=[bad])
    failed.status.code = SC.SUCCESS
    assert overall_status(failed).status.code == SC.FAILURE
    kept = service_pb2.MultiOutputResponse()
    kept.status.code = SC.FAILURE
    assert overall_status(kept).status.code == SC.FAILURE


def test_orchard_models_get_the_orchard_adapter(echo_cls):
    assert isinstance(adapter_for(echo_cls()), OrchardAdapter)
    with pytest.raises(TypeError):
        adapter_for(object())


async def test_health_probes_answer_200_503_and_404():
    ready = {"now": False}
    health = HealthServer({LIVENESS: lambda: True, READINESS: lambda: ready["now"]})
    port = await health.start()
    try:
        assert await _get(port, LIVENESS) == 200
        assert await _get(port, READINESS) == 503
        ready["now"] = True
        assert await _get(port, READINESS) == 200
        assert await _get(port, "/elsewhere") == 404
        assert await _get(port, LIVENESS, method="POST") == 404
    finally:
        await health.close()


async def _get(port: int, path: str, method: str = "GET") -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), WAIT)
        return int(status_line.split()[1])
    finally:
        writer.close()
        await writer.wait_closed()


def test_the_runner_imports_nothing_a_model_environment_lacks():
    """The runner modules load with the server side's dependencies and modules refused."""
    code = (
        "import orchard.runners.serve, orchard.runners.runner, orchard.runners.health\n"
        "import orchard.runners.adapters, orchard.runners.work_stream\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        banned_imports_command("-c", code),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr + code


async def test_a_cancel_that_arrives_as_the_pause_ends_is_not_swallowed(echo_cls):
    """asyncio.wait_for on Python 3.11 returns the inner result when its task is cancelled in
    the same step as the inner wait ends; the runner's cancel must stop it all the same."""
    runner = Runner(
        adapter_for(echo_cls()),
        RunnerSettings(
            server="127.0.0.1:1",
            pat=PAT,
            runner_id="runner-1",
            capacity=1,
            user_id="alice",
            nodepool_id="np-1",
            compute_cluster_id="cc-1",
        ),
    )
    pause = asyncio.create_task(runner._pause(3600.0))
    await asyncio.sleep(0)  # the pause is waiting for stop()
    runner.stop()
    pause.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pause
