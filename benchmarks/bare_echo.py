"""The wire floor: a bare grpc.aio server answering the same V2 methods and messages as
Orchard (echo, 300-byte chunks, bidi echo), with no auth, routing or runner hop.

With ``--slots N --service-ms D`` each PostModelOutputs takes D ms in one of N slots, which
calls wait for first come, first served (an ``asyncio.Semaphore``): the ideal server of a model
that takes D ms on N slots in all, the baseline of ``fairness.py``.

    python benchmarks/bare_echo.py [--slots N --service-ms D]
        # prints "port N", serves until stdin closes
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
from collections.abc import AsyncIterator

import grpc
from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2 as sc

from orchard.wire import SERVICE, request_class, response_class

CHUNK = "x" * 300


def answer(text: str) -> service_pb2.MultiOutputResponse:
    output = resources_pb2.Output(data=resources_pb2.Data(text=resources_pb2.Text(raw=text)))
    output.status.code = sc.SUCCESS
    response = service_pb2.MultiOutputResponse(outputs=[output])
    response.status.code = sc.SUCCESS
    return response


async def predict(
    request: service_pb2.PostModelOutputsRequest, context: object
) -> service_pb2.MultiOutputResponse:
    return answer(request.inputs[0].data.text.raw)


async def predict_in_a_slot(
    slots: asyncio.Semaphore,
    seconds: float,
    request: service_pb2.PostModelOutputsRequest,
    context: object,
) -> service_pb2.MultiOutputResponse:
    async with slots:  # asyncio's semaphore serves its waiters in the order they came
        await asyncio.sleep(seconds)
    return answer(request.inputs[0].data.text.raw)


async def generate(
    request: service_pb2.PostModelOutputsRequest, context: object
) -> AsyncIterator[service_pb2.MultiOutputResponse]:
    chunks = int(request.model.model_version.output_info.params["chunks"] or 1000)
    for _ in range(chunks):
        yield answer(CHUNK)


async def stream(
    requests: AsyncIterator[service_pb2.PostModelOutputsRequest], context: object
) -> AsyncIterator[service_pb2.MultiOutputResponse]:
    async for request in requests:
        yield answer(request.inputs[0].data.text.raw)


def codec(name: str) -> dict[str, object]:
    """The (de)serializers of V2 method ``name``, for a method handler."""
    return {
        "request_deserializer": request_class(name).FromString,
        "response_serializer": response_class(name).SerializeToString,
    }


async def serve_until_stdin_closes(handlers: dict[str, grpc.RpcMethodHandler]) -> None:
    """Serve ``handlers`` (V2 method name: handler) on a free loopback port, print
    ``port N``, and stop when standard input closes."""
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"port {port}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.stop(1)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=0, help="calls served at once (0: all)")
    parser.add_argument("--service-ms", type=float, default=0.0, help="each call's time in a slot")
    args = parser.parse_args()
    unary = (
        functools.partial(predict_in_a_slot, asyncio.Semaphore(args.slots), args.service_ms / 1000)
        if args.slots
        else predict
    )
    await serve_until_stdin_closes(
        {
            "PostModelOutputs": grpc.unary_unary_rpc_method_handler(
                unary, **codec("PostModelOutputs")
            ),
            "GenerateModelOutputs": grpc.unary_stream_rpc_method_handler(
                generate, **codec("GenerateModelOutputs")
            ),
            "StreamModelOutputs": grpc.stream_stream_rpc_method_handler(
                stream, **codec("StreamModelOutputs")
            ),
        }
    )


if __name__ == "__main__":
    asyncio.run(main())
