"""The floor of Orchard's request path, and what Orchard spends above it.

Three servers answer the same unary PostModelOutputs (300 bytes of text in, the same out):

- bare: a grpc.aio server answering in its handler (``bare_echo.py``);
- relay: a grpc.aio server that hands each call over one bidi stream to a second process and
  answers with what comes back: the shape of Orchard's path with nothing else in it;
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

from orchard.wire import callable_for

HERE = Path(__file__).resolve().parent


async def relay_server() -> None:
    """Serve PostModelOutputs by relaying over the first ProcessRunnerItems stream."""
    outbox: asyncio.Queue[service_pb2.MultiRunnerItemResponse] = asyncio.Queue()
    waiting: dict[str, asyncio.Future[service_pb2.MultiOutputResponse]] = {}
    numbers = iter(range(1, 1 << 62))

    async def predict(request: service_pb2.PostModelOutputsRequest, context: object) -> object:
        key = str(next(numbers))
        waiting[key] = asyncio.get_running_loop().create_future()
        item = service_pb2.RunnerItem(id=key)
        item.post_model_outputs_request.CopyFrom(request)
        outbox.put_nowait(service_pb2.MultiRunnerItemResponse(runner_items=[item]))
        return await waiting[key]

    async def work(requests: AsyncIterator[object], context: object) -> AsyncIterator[object]:
        async def read() -> None:
            async for message in requests:
                if message.runner_item_id:  # type: ignore[attr-defined]
                    future = waiting.pop(message.runner_item_id)  # type: ignore[attr-defined]
                    future.set_result(message.runner_item_outputs[0].multi_output_response)  # type: ignore[attr-defined]

        reader = asyncio.create_task(read())
        try:
            while True:
                yield await outbox.get()
        finally:
            reader.cancel()

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


async def relay_runner(port: int) -> None:
    """Answer every relayed item at once, like a no-op model."""
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    call = callable_for(channel, "ProcessRunnerItems")()
    await call.write(service_pb2.PostRunnerItemOutputsRequest())
    while (message := await call.read()) is not grpc.aio.EOF:
        for item in message.runner_items:
            out = service_pb2.PostRunnerItemOutputsRequest(runner_item_id=item.id)
            text = item.post_model_outputs_request.inputs[0].data.text.raw
            out.runner_item_outputs.add().multi_output_response.CopyFrom(answer(text))
            await call.write(out)


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

    relay = subprocess.Popen(
        [sys.executable, __file__, "relay-server"],
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert relay.stdout is not None
    port = int(relay.stdout.readline().split()[1])
    runner = subprocess.Popen([sys.executable, __file__, "relay-runner", str(port)])
    try:
        processes = [psutil.Process(relay.pid), psutil.Process(runner.pid)]
        results["relay"] = await measure(f"127.0.0.1:{port}", processes, calls)
    finally:
        runner.kill()
        runner.wait()
        relay.communicate("", timeout=30)

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
        asyncio.run(relay_server())
        return
    if sys.argv[1:2] == ["relay-runner"]:
        asyncio.run(relay_runner(int(sys.argv[2])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    print(json.dumps(asyncio.run(run(parser.parse_args().calls)), indent=2))


if __name__ == "__main__":
    main()
