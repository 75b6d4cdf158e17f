"""The data plane through the real server, with scripted replicas on ProcessRunnerItems.

The replicas here are fakes standing for the runner process (tested on its own in
test_runner*.py): they let each test decide exactly when and how a replica answers, so
holding, cancellation, retries and queue limits can be checked deterministically."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import grpc
import pytest
from clarifai_grpc.grpc.api import resources_pb2 as r
from clarifai_grpc.grpc.api import service_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2 as sc

from orchard import wire, work_protocol
from tests.resources import make_deployment, make_runner, make_stack, ok

pytestmark = pytest.mark.asyncio(loop_scope="function")


def text_response(text: str) -> service_pb2.MultiOutputResponse:
    out = r.Output(status={"code": sc.SUCCESS}, data=r.Data(text=r.Text(raw=text)))
    return service_pb2.MultiOutputResponse(status={"code": sc.SUCCESS}, outputs=[out])


class FakeReplica:
    """One replica on ProcessRunnerItems; ``handler(item, replica)`` scripts its answers."""

    def __init__(self, server, runner_id: str, capacity: int = 4, replica_id: str = "r1") -> None:
        self.server, self.runner_id, self.capacity = server, runner_id, capacity
        self.replica_id = replica_id
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.items: asyncio.Queue = asyncio.Queue()  # every RunnerItem received
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        self.task: asyncio.Task | None = None

    async def _requests(self) -> AsyncIterator:
        hello = work_protocol.Hello(self.runner_id, "np", "cc", self.replica_id, self.capacity)
        yield work_protocol.hello(hello)
        while (message := await self.outbox.get()) is not None:
            yield message

    async def start(self) -> FakeReplica:
        call = wire.callable_for(self.channel, "ProcessRunnerItems")(
            self._requests(), metadata=(("authorization", f"Key {self.server.pat}"),)
        )

        async def pump() -> None:
            async for response in call:
                for item in response.runner_items:
                    await self.items.put(item)

        self.task = asyncio.create_task(pump())
        return self

    def send(self, message) -> None:
        self.outbox.put_nowait(message)

    async def next_item(self) -> service_pb2.RunnerItem:
        return await asyncio.wait_for(self.items.get(), 30)

    async def close(self) -> None:
        self.outbox.put_nowait(None)
        if self.task:
            self.task.cancel()
        await self.channel.close()


@pytest.fixture
def deployed(server, api):
    version = make_stack(api)
    make_deployment(api, "dep", version=version)
    runner = make_runner(api)
    return runner.id


def predict_request(text: str = "hi", n: int = 1) -> service_pb2.PostModelOutputsRequest:
    return service_pb2.PostModelOutputsRequest(
        runner_selector=r.RunnerSelector(deployment=r.Deployment(id="dep")),
        inputs=[r.Input(data=r.Data(text=r.Text(raw=text))) for _ in range(n)],
    )


async def client_call(server, name: str, request, **kwargs):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        method = wire.callable_for(channel, name)
        metadata = (("authorization", f"Key {server.pat}"),)
        if name == "PostModelOutputs":
            return await method(request, metadata=metadata, timeout=30, **kwargs)
        return [resp async for resp in method(request, metadata=metadata, timeout=30)]


async def test_unary_call_reaches_a_replica_and_comes_back(server, deployed):
    replica = await FakeReplica(server, deployed).start()
    try:
        call = asyncio.create_task(client_call(server, "PostModelOutputs", predict_request()))
        item = await replica.next_item()
        assert item.processing_info.runner_method_type == work_protocol.UNARY
        assert item.post_model_outputs_request.inputs[0].data.text.raw == "hi"
        replica.send(work_protocol.output(item.id, text_response("HI")))
        replica.send(work_protocol.item_end(item.id))
        response = await call
        assert response.outputs[0].data.text.raw == "HI"
        assert response.runner_selector.deployment.id == "dep"
    finally:
        await replica.close()


async def test_generate_streams_every_output(server, deployed):
    replica = await FakeReplica(server, deployed).start()
    try:
        call = asyncio.create_task(
            client_call(server, "GenerateModelOutputs", predict_request("a b c"))
        )
        item = await replica.next_item()
        assert item.processing_info.runner_method_type == work_protocol.SERVER_STREAM
        for word in "abc":
            replica.send(work_protocol.output(item.id, text_response(word)))
        replica.send(work_protocol.item_end(item.id))
        assert [resp.outputs[0].data.text.raw for resp in await call] == ["a", "b", "c"]
    finally:
        await replica.close()


async def test_stream_call_forwards_later_requests_and_the_input_end(server, deployed):
    replica = await FakeReplica(server, deployed).start()
    requests: asyncio.Queue = asyncio.Queue()

    async def client_requests():
        while (request := await requests.get()) is not None:
            yield request

    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            call = wire.callable_for(channel, "StreamModelOutputs")(
                client_requests(), metadata=(("authorization", f"Key {server.pat}"),), timeout=30
            )
            requests.put_nowait(predict_request("one"))
            item = await replica.next_item()
            assert item.processing_info.runner_method_type == work_protocol.BIDI
            requests.put_nowait(predict_request("two"))
            follow_up = await replica.next_item()
            assert (follow_up.id, follow_up.post_model_outputs_request.inputs[0].data.text.raw) == (
                item.id,
                "two",
            )
            requests.put_nowait(None)
            end = await replica.next_item()
            assert end.processing_info.status.code == sc.RUNNER_STREAM_END
            replica.send(work_protocol.output(item.id, text_response("ONE")))
            replica.send(work_protocol.item_end(item.id))
            assert [resp.outputs[0].data.text.raw async for resp in call] == ["ONE"]
    finally:
        await replica.close()


async def test_a_client_that_goes_away_cancels_its_item(server, deployed):
    replica = await FakeReplica(server, deployed).start()
    try:
        call = asyncio.create_task(client_call(server, "GenerateModelOutputs", predict_request()))
        item = await replica.next_item()
        call.cancel()
        cancel = await replica.next_item()
        assert (cancel.id, cancel.processing_info.status.code) == (
            item.id,
            sc.RUNNER_ITEM_CANCELLED,
        )
    finally:
        await replica.close()


async def test_a_unary_call_is_retried_once_when_its_replica_dies(server, deployed):
    doomed = await FakeReplica(server, deployed).start()
    call = asyncio.create_task(client_call(server, "PostModelOutputs", predict_request()))
    await doomed.next_item()
    healthy = await FakeReplica(server, deployed).start()
    try:
        await doomed.close()  # goes away without answering
        item = await healthy.next_item()
        healthy.send(work_protocol.output(item.id, text_response("saved")))
        healthy.send(work_protocol.item_end(item.id))
        assert (await call).outputs[0].data.text.raw == "saved"
    finally:
        await healthy.close()


async def test_a_call_whose_replica_was_killed_for_memory_is_not_sent_again(server, deployed):
    doomed = await FakeReplica(server, deployed, replica_id="doomed").start()
    call = asyncio.create_task(client_call(server, "PostModelOutputs", predict_request()))
    await doomed.next_item()
    healthy = await FakeReplica(server, deployed, replica_id="healthy").start()
    try:
        # what the local provider does before it kills a replica over its memory
        server.server.dispatcher.out_of_memory("doomed", 3 * 2**30, 2**30)
        await doomed.close()
        response = await call
        assert response.status.code == sc.INPUT_OVER_LIMIT
        assert response.status.description == (
            "the input was too large for the model's memory: the replica of deployment 'dep' "
            "running this call was killed using 3.0 GiB of memory, over its limit of 1.0 GiB; "
            "send smaller inputs, or raise inference_compute_info.cpu_memory in the model's "
            "config.yaml"
        )
        assert healthy.items.empty()  # never sent to the other replica
    finally:
        await healthy.close()


async def test_a_stream_whose_replica_dies_ends_with_a_clear_status(server, deployed):
    doomed = await FakeReplica(server, deployed).start()
    call = asyncio.create_task(client_call(server, "GenerateModelOutputs", predict_request()))
    item = await doomed.next_item()
    doomed.send(work_protocol.output(item.id, text_response("partial")))
    await doomed.close()
    responses = await call
    assert responses[-1].status.code == sc.RUNNER_PROCESSING_FAILED
    assert "went away mid-call" in responses[-1].status.description


async def test_no_replica_answers_model_deploying_after_the_hold(server, deployed):
    server.server.dispatcher.settings.hold_seconds = 0.2
    response = await client_call(server, "PostModelOutputs", predict_request())
    assert response.status.code == sc.MODEL_DEPLOYING
    assert "no replica of deployment 'dep' is ready" in response.status.description


async def test_a_call_held_for_a_starting_replica_is_served(server, deployed):
    call = asyncio.create_task(client_call(server, "PostModelOutputs", predict_request()))
    replica = await FakeReplica(server, deployed).start()  # arrives after the call
    try:
        item = await replica.next_item()
        replica.send(work_protocol.output(item.id, text_response("late")))
        replica.send(work_protocol.item_end(item.id))
        assert (await call).outputs[0].data.text.raw == "late"
    finally:
        await replica.close()


async def test_a_full_queue_is_refused_at_once(server, deployed):
    server.server.dispatcher.settings.max_queue = 0
    response = await client_call(server, "PostModelOutputs", predict_request())
    assert response.status.code == sc.MODEL_BUSY_PLEASE_RETRY
    assert "queue full (queued=0, max=0) for deployment 'dep'" in response.status.description


async def test_more_than_128_inputs_is_refused(server, deployed):
    response = await client_call(server, "PostModelOutputs", predict_request(n=129))
    assert response.status.code == sc.CONN_INVALID_REQUEST
    assert "send at most 128" in response.status.description


async def test_a_disabled_deployment_rejects_predictions(server, api, deployed):
    ok(
        api.call(
            "PatchDeployments",
            action="merge",
            deployments=[r.Deployment(id="dep", status=r.Deployment.Status.DISABLED)],
        )
    )
    response = await client_call(server, "PostModelOutputs", predict_request())
    assert response.status.code == sc.DEPLOYMENT_DISABLED


async def test_a_model_without_deployment_is_not_deployed(server, api, deployed):
    request = service_pb2.PostModelOutputsRequest(
        user_app_id=r.UserAppIDSet(user_id=api.user_id, app_id="app"),
        model_id="m",
        inputs=[r.Input(data=r.Data(text=r.Text(raw="x")))],
    )
    ok(api.call("DeleteDeployments", ids=["dep"]))
    response = await client_call(server, "PostModelOutputs", request)
    assert response.status.code == sc.MODEL_NOT_DEPLOYED


async def _file_server(body: bytes):
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/cat.txt", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]


async def test_url_inputs_are_fetched_by_the_server_when_allowed(server, deployed):
    web_runner, port = await _file_server(b"fetched text")
    replica = await FakeReplica(server, deployed).start()
    server.server.fetcher.policy = dataclasses.replace(
        server.server.fetcher.policy, allowed_hosts=frozenset({f"127.0.0.1:{port}"})
    )
    request = service_pb2.PostModelOutputsRequest(
        runner_selector=r.RunnerSelector(deployment=r.Deployment(id="dep")),
        inputs=[r.Input(data=r.Data(text=r.Text(url=f"http://127.0.0.1:{port}/cat.txt")))],
    )
    try:
        call = asyncio.create_task(client_call(server, "PostModelOutputs", request))
        item = await replica.next_item()
        text = item.post_model_outputs_request.inputs[0].data.text
        assert (text.raw, text.url) == ("fetched text", "")
        replica.send(work_protocol.output(item.id, text_response("ok")))
        replica.send(work_protocol.item_end(item.id))
        assert (await call).status.code == sc.SUCCESS
    finally:
        await replica.close()
        await web_runner.cleanup()


async def test_url_inputs_on_private_addresses_are_refused(server, deployed):
    request = service_pb2.PostModelOutputsRequest(
        runner_selector=r.RunnerSelector(deployment=r.Deployment(id="dep")),
        inputs=[r.Input(data=r.Data(image=r.Image(url="http://10.1.2.3/cat.png")))],
    )
    response = await client_call(server, "PostModelOutputs", request)
    assert response.status.code == sc.INPUT_DOWNLOAD_FAILED
    assert "10.1.2.3 is a private address" in response.status.description


async def test_another_user_can_neither_predict_nor_serve_the_owners_deployment(server, deployed):
    bob = server.create_user("bob")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        metadata = (("authorization", f"Key {bob}"),)
        predict = wire.callable_for(channel, "PostModelOutputs")
        request = predict_request()
        request.runner_selector.deployment.user_id = server.user_id
        response = await predict(request, metadata=metadata, timeout=30)
        assert response.status.code == sc.DEPLOYMENT_DOES_NOT_EXIST

        async def hello():
            yield work_protocol.hello(work_protocol.Hello(deployed, "np", "cc", "r", 1))

        work = wire.callable_for(channel, "ProcessRunnerItems")(
            hello(), metadata=metadata, timeout=30
        )
        answers = [message async for message in work]
        assert answers[-1].status.code == sc.RUNNER_DOES_NOT_EXIST


async def test_an_item_refused_by_a_draining_replica_goes_to_another(server, deployed):
    draining = await FakeReplica(server, deployed).start()
    call = asyncio.create_task(client_call(server, "GenerateModelOutputs", predict_request()))
    item = await draining.next_item()
    other = await FakeReplica(server, deployed).start()
    try:
        draining.send(work_protocol.draining())
        draining.send(work_protocol.refused(item.id, "draining"))
        moved = await other.next_item()
        assert moved.post_model_outputs_request.inputs[0].data.text.raw == "hi"
        other.send(work_protocol.output(moved.id, text_response("moved")))
        other.send(work_protocol.item_end(moved.id))
        assert [resp.outputs[0].data.text.raw for resp in await call] == ["moved"]
    finally:
        await draining.close()
        await other.close()
