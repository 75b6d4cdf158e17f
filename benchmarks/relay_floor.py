"""The floor of Orchard's request path, and what Orchard spends above it.

Four servers answer the same unary PostModelOutputs (300 bytes of text in, the same out):

- bare: a grpc.aio server answering in its handler (``bare_echo.py``);
- relay: a grpc.aio server that hands each call over one bidi stream to a second process and
  answers with what comes back: the shape of a runner's path over gRPC with nothing else in it;
- relay_link: the same with the hop as frames on a Unix socket (Orchard's local link, which the
  server's own replicas use): the floor of Orchard's path on one host;
- orchard: ``orchard serve`` with the one replica it starts for a no-op deployment.

For each: p50 latency at concurrency 1, and CPU time per call of every process involved (from
psutil, around the same calls), which is steadier than latency on a shared machine.

    .venv/bin/python benchmarks/relay_floor.py [--calls 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import psutil
from bare_echo import answer, codec, serve_until_stdin_closes
from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from common import start_server, stop_server
from dataplane import deploy_noop, start_bare

from orchard.runners import link
from orchard.wire import callable_for

HERE = Path(__file__).resolve().parent


async def relay_server(link_path: str = "") -> None:
    """Serve PostModelOutputs by relaying over the first runner's hop: a ProcessRunnerItems
    stream, or with ``link_path`` frames on a Unix socket there (Orchard's local link)."""
    waiting: dict[str, asyncio.Future[service_pb2.MultiOutputResponse]] = {}
    numbers = iter(range(1, 1 << 62))
    outbox: asyncio.Queue[service_pb2.MultiRunnerItemResponse] = asyncio.Queue()
    hop = {"send": outbox.put_nowait}
    linked = asyncio.Event()  # the runner's link is open (with link_path)

    def settle(message: service_pb2.PostRunnerItemOutputsRequest) -> None:
        if message.runner_item_id:
            future = waiting.pop(message.runner_item_id)
            future.set_result(message.runner_item_outputs[0].multi_output_response)

    async def predict(request: service_pb2.PostModelOutputsRequest, context: object) -> object:
        key = str(next(numbers))
        waiting[key] = asyncio.get_running_loop().create_future()
        item = service_pb2.RunnerItem(id=key)
        item.post_model_outputs_request.CopyFrom(request)
        if link_path and not linked.is_set():
            await linked.wait()
        hop["send"](service_pb2.MultiRunnerItemResponse(runner_items=[item]))
        return await waiting[key]

    async def work(requests: AsyncIterator[object], context: object) -> AsyncIterator[object]:
        async def read() -> None:
            async for message in requests:
                settle(message)  # type: ignore[arg-type]

        reader = asyncio.create_task(read())
        try:
            while True:
                yield await outbox.get()
        finally:
            reader.cancel()

    async def on_link(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hop["send"] = lambda message: writer.write(link.frame(message))
        linked.set()
        while (data := await link.read_frame(reader)) is not None:
            settle(service_pb2.PostRunnerItemOutputsRequest.FromString(data))

    if link_path:
        await asyncio.start_unix_server(on_link, link_path)
    await serve_until_stdin_closes(
        {
            "PostModelOutputs": grpc.unary_unary_rpc_method_handler(
                predict, **codec("PostModelOutputs")
            ),
            "ProcessRunnerItems": grpc.stream_stream_rpc_method_handler(
                work, **codec("ProcessRunnerItems")
            ),
        }
    )


def relay_answer(item: service_pb2.RunnerItem) -> service_pb2.PostRunnerItemOutputsRequest:
    out = service_pb2.PostRunnerItemOutputsRequest(runner_item_id=item.id)
    text = item.post_model_outputs_request.inputs[0].data.text.raw
    out.runner_item_outputs.add().multi_output_response.CopyFrom(answer(text))
    return out


async def relay_runner(where: str) -> None:
    """Answer every relayed item at once, like a no-op model; ``where`` is the relay's port,
    or ``link:PATH``."""
    if link.is_link(where):
        reader, writer = await asyncio.open_unix_connection(where.removeprefix(link.SCHEME))
        while (data := await link.read_frame(reader)) is not None:
            for item in service_pb2.MultiRunnerItemResponse.FromString(data).runner_items:
                writer.write(link.frame(relay_answer(item)))
        return
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{where}")
    call = callable_for(channel, "ProcessRunnerItems")()
    await call.write(service_pb2.PostRunnerItemOutputsRequest())
    while (message := await call.read()) is not grpc.aio.EOF:
        for item in message.runner_items:
            await call.write(relay_answer(item))


def cpu_seconds(processes: list[psutil.Process]) -> float:
    return sum(p.cpu_times().user + p.cpu_times().system for p in processes)


async def measure(
    address: str, processes: list[psutil.Process], calls: int, **call_args: object
) -> dict[str, float]:
    request = service_pb2.PostModelOutputsRequest(
        inputs=[
            resources_pb2.Input(data=resources_pb2.Data(text=resources_pb2.Text(raw="x" * 300)))
        ]
    )
    selector = call_args.pop("selector", None)
    if selector is not None:
        request.runner_selector.CopyFrom(selector)
    channel = grpc.aio.insecure_channel(address)
    predict = callable_for(channel, "PostModelOutputs")
    for _ in range(200):  # warm up both ends
        await predict(request, **call_args)
    times = []
    before = cpu_seconds(processes)
    for _ in range(calls):
        start = time.perf_counter()
        await predict(request, **call_args)
        times.append(time.perf_counter() - start)
    used = cpu_seconds(processes) - before
    await channel.close()
    return {
        "unary_c1_p50_ms": round(statistics.median(times) * 1000, 3),
        "server_side_cpu_us_per_call": round(used / calls * 1e6, 1),
    }


async def measure_relay(link_path: str, calls: int) -> dict[str, float]:
    """The relay server and its runner, the hop a gRPC stream or (``link_path``) a link."""
    server_args = [sys.executable, __file__, "relay-server", *([link_path] if link_path else [])]
    relay = subprocess.Popen(server_args, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert relay.stdout is not None
    port = int(relay.stdout.readline().split()[1])
    where = link.link_address(link_path) if link_path else str(port)
    runner = subprocess.Popen([sys.executable, __file__, "relay-runner", where])
    try:
        processes = [psutil.Process(relay.pid), psutil.Process(runner.pid)]
        return await measure(f"127.0.0.1:{port}", processes, calls)
    finally:
        runner.kill()
        runner.wait()
        relay.communicate("", timeout=30)


def family(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


async def run(calls: int) -> dict[str, object]:
    results: dict[str, dict[str, float]] = {}
    bare, bare_port = start_bare()
    try:
        results["bare"] = await measure(f"127.0.0.1:{bare_port}", family(bare.pid), calls)
    finally:
        bare.communicate("", timeout=30)

    with tempfile.TemporaryDirectory() as tmp:
        for name, hop in (("relay", ""), ("relay_link", f"{tmp}/relay.sock")):
            results[name] = await measure_relay(hop, calls)

    pat = secrets.token_hex(16)
    with tempfile.TemporaryDirectory() as tmp:
        server, orchard_port = start_server(Path(tmp) / "home", pat, "--offline")
        try:
            deploy_noop(f"http://127.0.0.1:{orchard_port}", pat)
            selector = resources_pb2.RunnerSelector(
                deployment=resources_pb2.Deployment(id="noop-dep", user_id="bench")
            )
            metadata = (("authorization", f"Key {pat}"),)
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{orchard_port}")
            first = service_pb2.PostModelOutputsRequest(
                inputs=[
                    resources_pb2.Input(data=resources_pb2.Data(text=resources_pb2.Text(raw="x")))
                ],
                runner_selector=selector,
            )
            await callable_for(channel, "PostModelOutputs")(first, metadata=metadata)  # held
            await channel.close()
            results["orchard"] = await measure(
                f"127.0.0.1:{orchard_port}",
                family(server.pid),
                calls,
                selector=selector,
                metadata=metadata,
            )
        finally:
            stop_server(server)
    bare_p50 = results["bare"]["unary_c1_p50_ms"]
    return {
        "benchmark": "relay_floor",
        "calls": calls,
        "results": results,
        "p50_over_bare": {k: round(v["unary_c1_p50_ms"] / bare_p50, 2) for k, v in results.items()},
    }


def main() -> None:
    if sys.argv[1:2] == ["relay-server"]:
        asyncio.run(relay_server(*sys.argv[2:3]))
        return
    if sys.argv[1:2] == ["relay-runner"]:
        asyncio.run(relay_runner(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    print(json.dumps(asyncio.run(run(parser.parse_args().calls)), indent=2))


if __name__ == "__main__":
    main()
