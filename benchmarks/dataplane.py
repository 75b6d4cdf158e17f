"""Data-plane throughput and latency: Orchard (server + the one replica it starts for a
deployment of a no-op model) against the wire floor, a bare grpc.aio server answering the same
V2 messages, measured in the same run with the same client.

- unary_c1: p50 latency of PostModelOutputs, one call at a time;
- unary_c64: calls/s with 64 calls in flight;
- generate: chunks/s of a 1,000-chunk GenerateModelOutputs (300-byte chunks);
- bidi: round trips/s on one StreamModelOutputs (send one, wait for its answer).

Then Ray Serve, the peer the design compares against (``ray_serve.py``; skipped with
``--no-ray``): the same no-op (300-byte text in, the same text out) as one replica with
``max_ongoing_requests=100`` and ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``, called over HTTP through
Serve's proxy by an aiohttp client (p50 at concurrency 1, requests/s at 64), and for reference
against the replica's own direct-ingress port and through an in-process DeploymentHandle. It
runs after Orchard and the bare server have stopped, on one Ray cluster for all its rounds.
Ray is installed by the benchmark into its own virtual environment, ``.cache/ray-serve-venv``
(uv, pinned, reused while the pins match), never into Orchard's. Ray binds some listeners to
every interface, so its processes run in a private network namespace whose only interface is
loopback (``unshare -n``, so root), and every one of them is killed by process id afterwards.
``--ray-haproxy`` adds Ray Serve once more with its HAProxy ingress in place of the Python
proxy (``RAY_SERVE_ENABLE_HA_PROXY=1``, which Ray's high-throughput guide pairs with the
throughput-optimized flag), reported for reference without a target.

    .venv/bin/python benchmarks/dataplane.py [--seconds 5] [--calls 400] [--rounds 3] [--no-ray]
        [--ray-haproxy]
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
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from common import start_server, stop_server
from ray_serve import REQUIREMENTS as RAY_REQUIREMENTS
from ray_serve import measure_dataplane as ray_serve_dataplane

from orchard.client.nodepool import Nodepool
from orchard.client.uploads import upload_model
from orchard.client.user import User
from orchard.wire import callable_for

HERE = Path(__file__).resolve().parent


def request(
    text: str, selector: resources_pb2.RunnerSelector | None, method: str = "", chunks: int = 0
) -> service_pb2.PostModelOutputsRequest:
    req = service_pb2.PostModelOutputsRequest(
        inputs=[resources_pb2.Input(data=resources_pb2.Data(text=resources_pb2.Text(raw=text)))]
    )
    if method:
        req.inputs[0].data.metadata.update({"_method_name": method})
    if chunks:
        req.model.model_version.output_info.params.update({"chunks": chunks})
    if selector is not None:
        req.runner_selector.CopyFrom(selector)
    return req


async def calls_per_second(
    call: Callable[[], Awaitable[object]], concurrency: int, seconds: float
) -> float:
    """Completed ``call``s per second with ``concurrency`` of them in flight for ``seconds``."""
    done = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await call()
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - start)


class Target:
    def __init__(
        self, address: str, pat: str | None, selector: resources_pb2.RunnerSelector | None
    ) -> None:
        self.channel = grpc.aio.insecure_channel(address)
        self.metadata = (("authorization", f"Key {pat}"),) if pat else ()
        self.selector = selector

    async def unary(self) -> None:
        response = await callable_for(self.channel, "PostModelOutputs")(
            request("x" * 300, self.selector), metadata=self.metadata
        )
        assert response.status.code == 10000, response.status

    async def unary_c1(self, calls: int) -> float:
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            await self.unary()
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1000

    async def unary_rate(self, concurrency: int, seconds: float) -> float:
        return await calls_per_second(self.unary, concurrency, seconds)

    async def generate(self, chunks: int) -> float:
        start = time.perf_counter()
        received = 0
        call = callable_for(self.channel, "GenerateModelOutputs")(
            request("go", self.selector, "generate", chunks), metadata=self.metadata
        )
        async for response in call:
            assert response.status.code == 10000, response.status
            received += 1
        assert received == chunks, received
        return received / (time.perf_counter() - start)

    async def bidi(self, trips: int) -> float:
        queue: asyncio.Queue[service_pb2.PostModelOutputsRequest | None] = asyncio.Queue()

        async def requests() -> AsyncIterator[service_pb2.PostModelOutputsRequest]:
            while (item := await queue.get()) is not None:
                yield item

        call = callable_for(self.channel, "StreamModelOutputs")(requests(), metadata=self.metadata)
        replies = call.__aiter__()
        start = time.perf_counter()
        for _ in range(trips):
            queue.put_nowait(request("ping", self.selector, "stream"))
            response = await replies.__anext__()
            assert response.status.code == 10000, response.status
        rate = trips / (time.perf_counter() - start)
        queue.put_nowait(None)
        call.cancel()
        return rate

    async def close(self) -> None:
        await self.channel.close()


async def measure(target: Target, args: argparse.Namespace) -> dict[str, float]:
    await target.unary_rate(8, 1.0)  # warm up both ends
    return {
        "unary_c1_p50_ms": round(await target.unary_c1(args.calls), 3),
        "unary_c64_per_s": round(await target.unary_rate(64, args.seconds), 1),
        "generate_chunks_per_s": round(await target.generate(1000), 1),
        "bidi_round_trips_per_s": round(await target.bidi(args.calls), 1),
    }


def start_bare() -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "bare_echo.py")],
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline().split()[1])


def deploy_noop(base: str, pat: str) -> None:
    """Upload the no-op model and deploy it with one replica into the nodepool the server made
    for this host (cluster ``local``, nodepool ``default``); the server starts the replica."""
    version = upload_model(HERE / "noop", user_id="bench", base_url=base, pat=pat)
    user = User(user_id="bench", base_url=base, pat=pat)
    pool = Nodepool("default", compute_cluster_id="local", _client=user)
    model = {"id": "noop", "app_id": "bench", "model_version": {"id": version.id}}
    pool.create_deployment(
        deployment_id="noop-dep",
        deployment_config={
            "worker": {"model": model},
            "scheduling_choice": 4,
            "nodepools": [{"id": "default", "compute_cluster": {"id": "local"}}],
            "autoscale_config": {"min_replicas": 1, "max_replicas": 1},
        },
    )


async def noop_targets(port: int, pat: str, bare_port: int) -> tuple[Target, Target]:
    """Orchard (the no-op model deployed on the server at ``port``, its first call held until
    the replica is connected) and the bare floor at ``bare_port``."""
    deploy_noop(f"http://127.0.0.1:{port}", pat)
    selector = resources_pb2.RunnerSelector(
        deployment=resources_pb2.Deployment(id="noop-dep", user_id="bench")
    )
    orchard = Target(f"127.0.0.1:{port}", pat, selector)
    await orchard.unary()
    return orchard, Target(f"127.0.0.1:{bare_port}", None, None)


async def run(args: argparse.Namespace) -> dict[str, object]:
    pat = secrets.token_hex(16)
    rounds: dict[str, list[dict[str, float]]] = {"bare": [], "orchard": []}
    with tempfile.TemporaryDirectory() as tmp:
        server, port = start_server(Path(tmp) / "home", pat, "--offline")
        bare, bare_port = start_bare()
        try:
            orchard, floor = await noop_targets(port, pat, bare_port)
            for _ in range(args.rounds):
                rounds["bare"].append(await measure(floor, args))
                rounds["orchard"].append(await measure(orchard, args))
            await orchard.close()
            await floor.close()
        finally:
            bare.communicate("", timeout=30)
            stop_server(server)
    ray = haproxy = None
    if not args.no_ray:
        ray = ray_serve_dataplane(args.seconds, args.calls, args.rounds)
        if args.ray_haproxy:
            haproxy = ray_serve_dataplane(args.seconds, args.calls, args.rounds, haproxy=True)
    return summarize(rounds, ray, haproxy)


def ray_section(figures: dict[str, float]) -> dict[str, object]:
    killed = figures.pop("processes_killed_after_shutdown", 0)
    return {
        "ray": RAY_REQUIREMENTS[0],
        "median": figures,
        "processes_killed_after_shutdown": killed,
    }


def summarize(
    rounds: dict[str, list[dict[str, float]]],
    ray: dict[str, float] | None,
    haproxy: dict[str, float] | None = None,
) -> dict[str, object]:
    med = {
        side: {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}
        for side, runs in rounds.items()
    }
    o, b = med["orchard"], med["bare"]
    ratios = {
        "unary_c1_p50_orchard_over_bare": round(o["unary_c1_p50_ms"] / b["unary_c1_p50_ms"], 2),
        "unary_c64_orchard_over_bare": round(o["unary_c64_per_s"] / b["unary_c64_per_s"], 3),
        "generate_orchard_over_bare": round(
            o["generate_chunks_per_s"] / b["generate_chunks_per_s"], 3
        ),
        "bidi_orchard_over_bare": round(
            o["bidi_round_trips_per_s"] / b["bidi_round_trips_per_s"], 3
        ),
    }
    targets = {
        "unary_c1_p50_max": 2.5,
        "unary_c64_min": 0.35,
        "generate_min": 0.5,
        "bidi_min": 0.4,
    }
    result: dict[str, object] = {
        "benchmark": "dataplane",
        "median": med,
        "rounds": rounds,
        "ratios": ratios,
        "targets": targets,
    }
    if ray is not None:
        result["ray_serve"] = ray_section(ray)
        ratios["ray_proxy_p50_over_orchard"] = round(
            ray["proxy_unary_c1_p50_ms"] / o["unary_c1_p50_ms"], 2
        )
        ratios["orchard_c64_over_ray_proxy"] = round(
            o["unary_c64_per_s"] / ray["proxy_unary_c64_per_s"], 2
        )
        # For reference, no target: the replica's own port, behind no Serve proxy.
        ratios["ray_direct_ingress_p50_over_orchard"] = round(
            ray["direct_ingress_unary_c1_p50_ms"] / o["unary_c1_p50_ms"], 2
        )
        ratios["orchard_c64_over_ray_direct_ingress"] = round(
            o["unary_c64_per_s"] / ray["direct_ingress_unary_c64_per_s"], 2
        )
        targets["ray_proxy_p50_over_orchard_min"] = 3.0
        targets["orchard_c64_over_ray_proxy_min"] = 5.0
    if haproxy is not None:
        # For reference, no target: Serve's HAProxy ingress in place of its Python proxy.
        result["ray_serve_haproxy"] = ray_section(haproxy)
        ratios["ray_haproxy_p50_over_orchard"] = round(
            haproxy["proxy_unary_c1_p50_ms"] / o["unary_c1_p50_ms"], 2
        )
        ratios["orchard_c64_over_ray_haproxy"] = round(
            o["unary_c64_per_s"] / haproxy["proxy_unary_c64_per_s"], 2
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray Serve comparison")
    parser.add_argument(
        "--ray-haproxy",
        action="store_true",
        help="also measure Ray Serve behind its HAProxy ingress (for reference, no target)",
    )
    print(json.dumps(asyncio.run(run(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
