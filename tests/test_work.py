"""ProcessRunnerItems as the official runner (clarifai 12.x `model serve`) speaks it, with
scripted calls standing for that runner: one item per call and its end by the call's end, a
control call for cancels, and a SUCCESS status on every message it is sent (it rejects any
other). The real official runner is tested end to end in test_official_sdk.py; Orchard's own
conventions in test_dispatch.py and test_runner*.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from clarifai_grpc.grpc.api import resources_pb2 as r
from clarifai_grpc.grpc.api import service_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2 as sc
from clarifai_grpc.grpc.api.status import status_pb2

from orchard import wire, work_protocol
from tests.resources import make_deployment, make_runner, make_stack
from tests.test_dispatch import client_call, predict_request, text_response
from tests.waiting import wait_for

pytestmark = pytest.mark.asyncio(loop_scope="function")


def official_hello(
    runner_id: str, description: str = "Success"
) -> service_pb2.PostRunnerItemOutputsRequest:
    """A hello as the official runner sends it: no capacity in its details."""
    return service_pb2.PostRunnerItemOutputsRequest(
        user_app_id=r.UserAppIDSet(user_id="admin"),
        runner_id=runner_id,
        nodepool_id="np",
        compute_cluster_id="cc",
        runner_replica_id="official-replica",
        status=status_pb2.Status(code=sc.RUNNER_STREAM_START, description=description),
    )


def official_output(item_id: str, text: str) -> service_pb2.PostRunnerItemOutputsRequest:
    """An output as the official runner sends it: status SUCCESS, never an item end."""
    return service_pb2.PostRunnerItemOutputsRequest(
        runner_item_id=item_id,
        runner_item_outputs=[
            service_pb2.RunnerItemOutput(multi_output_response=text_response(text))
        ],
        status=status_pb2.Status(code=sc.SUCCESS, description="Success"),
    )


class OfficialCall:
    """One ProcessRunnerItems call of the official runner: it takes one item, answers it, and
    ends the call (``finish``) or breaks it (``break_off``)."""

    def __init__(self, channel: grpc.aio.Channel, pat: str, runner_id: str) -> None:
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.received: asyncio.Queue = asyncio.Queue()  # every message the server sent
        self.call = wire.callable_for(channel, "ProcessRunnerItems")(
            self._requests(official_hello(runner_id)),
            metadata=(("authorization", f"Key {pat}"),),
        )
        self.task = asyncio.create_task(self._pump())

    async def _requests(self, hello) -> AsyncIterator:
        yield hello
        while (message := await self.outbox.get()) is not None:
            yield message

    async def _pump(self) -> None:
        async for message in self.call:
            await self.received.put(message)
        await self.received.put(None)

    async def next(self) -> service_pb2.MultiRunnerItemResponse | None:
        return await asyncio.wait_for(self.received.get(), 30)

    def send(self, message) -> None:
        self.outbox.put_nowait(message)

    async def finish(self) -> list:
        """End the call as the official runner does once its item is done; the server's
        messages until it ends the call too."""
        self.outbox.put_nowait(None)
        rest = []
        while (message := await self.next()) is not None:
            rest.append(message)
        return rest

    async def break_off(self) -> None:
        self.call.cancel()
        self.task.cancel()


@pytest.fixture
def deployed(server, api):
    """Deployment dep of model m in cc/np, and a runner for it; the runner's id."""
    make_deployment(api, "dep", version=make_stack(api))
    runner = make_runner(api)
    return runner.id


@pytest.fixture
async def channel(server):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield channel


async def test_a_unary_item_ends_with_its_one_output(server, deployed, channel):
    runner = OfficialCall(channel, server.pat, deployed)
    try:
        call = asyncio.create_task(client_call(server, "PostModelOutputs", predict_request()))
        message = await runner.next()
        assert message.status.code == sc.SUCCESS  # the official runner rejects anything else
        item = message.runner_items[0]
        assert item.processing_info.runner_method_type == work_protocol.UNARY
        runner.send(official_output(item.id, "HI"))
        assert (await call).outputs[0].data.text.raw == "HI"
    finally:
        await runner.finish()


async def test_a_generate_item_ends_with_its_call(server, deployed, channel):
    runner = OfficialCall(channel, server.pat, deployed)
    call = asyncio.create_task(client_call(server, "GenerateModelOutputs", predict_request("a b")))
    item = (await runner.next()).runner_items[0]
    for word in ("a", "b"):
        runner.send(official_output(item.id, word))
    last = await runner.finish()
    assert [m.status.code for m in last] == [sc.RUNNER_STREAM_END]
    assert [resp.outputs[0].data.text.raw for resp in await call] == ["a", "b"]


async def test_a_generate_item_on_a_broken_call_is_lost(server, deployed, channel):
    runner = OfficialCall(channel, server.pat, deployed)
    call = asyncio.create_task(client_call(server, "GenerateModelOutputs", predict_request()))
    item = (await runner.next()).runner_items[0]
    runner.send(official_output(item.id, "partial"))
    await runner.break_off()
    responses = await call
    assert responses[-1].status.code == sc.RUNNER_PROCESSING_FAILED


async def test_a_stream_items_input_end_comes_as_a_stream_end_status(server, deployed, channel):
    runner = OfficialCall(channel, server.pat, deployed)
    requests: asyncio.Queue = asyncio.Queue()

    async def client_requests():
        while (request := await requests.get()) is not None:
            yield request

    metadata = (("authorization", f"Key {server.pat}"),)
    call = wire.callable_for(channel, "StreamModelOutputs")(
        client_requests(), metadata=metadata, timeout=30
    )
    requests.put_nowait(predict_request("one"))
    item = (await runner.next()).runner_items[0]
    assert item.processing_info.runner_method_type == work_protocol.BIDI
    requests.put_nowait(predict_request("two"))
    follow_up = await runner.next()
    assert follow_up.status.code == sc.SUCCESS
    assert follow_up.runner_items[0].post_model_outputs_request.inputs[0].data.text.raw == "two"
    requests.put_nowait(None)
    input_end = await runner.next()
    assert (input_end.status.code, list(input_end.runner_items)) == (sc.RUNNER_STREAM_END, [])
    runner.send(official_output(item.id, "ONE"))
    runner.send(official_output(item.id, "TWO"))
    await runner.finish()
    assert [resp.outputs[0].data.text.raw async for resp in call] == ["ONE", "TWO"]


async def test_a_call_takes_one_item_the_next_waits_for_the_next_call(server, deployed, channel):
    first = OfficialCall(channel, server.pat, deployed)
    one = asyncio.create_task(client_call(server, "PostModelOutputs", predict_request("1")))
    item = (await first.next()).runner_items[0]
    two = asyncio.create_task(client_call(server, "PostModelOutputs", predict_request("2")))
    first.send(official_output(item.id, "ONE"))
    assert (await one).outputs[0].data.text.raw == "ONE"
    assert await first.finish() == [work_protocol.call_end()]  # the second item never came here
    second = OfficialCall(channel, server.pat, deployed)
    try:
        later = (await second.next()).runner_items[0]
        assert later.post_model_outputs_request.inputs[0].data.text.raw == "2"
        second.send(official_output(later.id, "TWO"))
        assert (await two).outputs[0].data.text.raw == "TWO"
    finally:
        await second.finish()


async def test_a_cancel_reaches_the_control_call(server, deployed, channel):
    control = OfficialCall(channel, server.pat, work_protocol.CONTROL_PREFIX + deployed)
    runner = OfficialCall(channel, server.pat, deployed)
    try:
        await _control_connected(server, deployed)
        call = asyncio.create_task(client_call(server, "GenerateModelOutputs", predict_request()))
        item = (await runner.next()).runner_items[0]
        call.cancel()
        cancel = await control.next()
        assert cancel.status.code == sc.SUCCESS
        assert [(i.id, i.processing_info.status.code) for i in cancel.runner_items] == [
            (item.id, sc.RUNNER_ITEM_CANCELLED)
        ]
    finally:
        await runner.finish()
        assert await control.finish() == []  # the control call ends when the runner ends it


async def test_a_control_call_for_an_unknown_runner_is_refused(server, deployed, channel):
    control = OfficialCall(channel, server.pat, work_protocol.CONTROL_PREFIX + "no-such-runner")
    refusal = await control.next()
    assert refusal.status.code == sc.RUNNER_DOES_NOT_EXIST
    assert await control.finish() == []


async def _control_connected(server, runner_id: str) -> None:
    """Wait (off this loop, which carries the calls) until the server holds the control call."""
    controls = server.server.runtime.runner_controls
    await asyncio.to_thread(
        wait_for,
        lambda: any(key[1] == runner_id for key in list(controls)),
        timeout=30,
        what="the control call to be registered",
    )
