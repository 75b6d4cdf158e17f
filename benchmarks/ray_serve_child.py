"""The Ray side of ``ray_serve.py``: runs under the Ray Serve environment's Python, inside a
loopback-only network namespace, and prints its figures as one JSON object on its last stdout
line. It does not import Orchard (that environment does not have it).

    python ray_serve_child.py dataplane --temp-dir DIR --seconds S --calls N --rounds R
    python ray_serve_child.py coldstart --temp-dir DIR --rounds R
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import psutil
import ray  # type: ignore[import-not-found]
from ray import serve
from starlette.requests import Request  # type: ignore[import-not-found]
from starlette.responses import Response  # type: ignore[import-not-found]

PORT = 8000
# Under RAY_SERVE_THROUGHPUT_OPTIMIZED an ingress replica also serves HTTP on its own port
# ("direct ingress", meant for an external load balancer), allocated from Ray's default
# range; the first replica in a fresh namespace gets its first port.
DIRECT_PORT = 30000
TEXT = "x" * 300


class Noop:
    """Orchard's no-op model: answers with the text it was given."""

    async def __call__(self, request: Request) -> Response:
        return Response(await request.body(), media_type="text/plain")

    async def predict(self, text: str) -> str:
        return text


NOOP = serve.deployment(max_ongoing_requests=100, num_replicas=1)(Noop)
SCALE_TO_ZERO = NOOP.options(
    num_replicas="auto",
    autoscaling_config={
        "min_replicas": 0,
        "initial_replicas": 0,
        "max_replicas": 1,
        "upscale_delay_s": 0,
        "downscale_delay_s": 1,
        "downscale_to_zero_delay_s": 1,
        "look_back_period_s": 1,
        # Deprecated in favour of environment variables, but still what the replicas and
        # the proxy's router push autoscaling metrics by; it only speeds up scaling down.
        "metrics_interval_s": 0.5,
    },
)


def start(temp_dir: str) -> None:
    ray.init(
        include_dashboard=False,
        object_store_memory=200 * 1024 * 1024,
        _temp_dir=temp_dir,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        logging_level="WARNING",
    )
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})


def stop(loop: asyncio.AbstractEventLoop) -> list[int]:
    """Shut Serve and Ray down, then kill by id any process Ray started that still lives (its
    descendants seen before shutdown, and anything else in this network namespace).

    Serve is shut down on ``loop``, the loop its handles were used on (throughput-optimized
    Serve runs a handle's router on the caller's loop)."""
    me = psutil.Process()
    started = me.children(recursive=True)
    try:
        loop.run_until_complete(serve.shutdown_async())
    finally:
        ray.shutdown()
    namespace = os.readlink("/proc/self/ns/net")
    for proc in psutil.process_iter():
        if proc.pid != me.pid and proc not in started:
            try:
                if os.readlink(f"/proc/{proc.pid}/ns/net") == namespace:
                    started.append(proc)
            except OSError:
                pass
    living = [proc for proc in started if proc.is_running()]
    for proc in living:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    _, alive = psutil.wait_procs(living, timeout=30)
    if alive:
        raise RuntimeError(f"Ray processes survived being killed: {[p.pid for p in alive]}")
    return [proc.pid for proc in living]


async def post(session: aiohttp.ClientSession, path: str = "/", port: int = PORT) -> bool:
    """One HTTP call (through the proxy unless told another port): whether it answered 200
    with the text sent."""
    try:
        async with session.post(f"http://127.0.0.1:{port}{path}", data=TEXT) as response:
            body = await response.read()
            return response.status == 200 and body == TEXT.encode()
    except aiohttp.ClientError:
        return False


async def p50_ms(call: Callable[[], Awaitable[None]], calls: int) -> float:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        await call()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1000, 3)


async def rate(call: Callable[[], Awaitable[None]], concurrency: int, seconds: float) -> float:
    done = 0
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            await call()
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return round(done / (time.perf_counter() - start), 1)


async def dataplane(handle: Any, seconds: float, calls: int, rounds: int) -> dict[str, float]:
    """Medians over ``rounds`` of each figure, all rounds on the same cluster and replica."""
    connector = aiohttp.TCPConnector(limit=128)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def http_call() -> None:
            if not await post(session):
                raise RuntimeError("the Ray Serve proxy did not echo the text")

        async def direct_call() -> None:
            if not await post(session, port=DIRECT_PORT):
                raise RuntimeError("the replica's own HTTP port did not echo the text")

        async def handle_call() -> None:
            if await handle.predict.remote(TEXT) != TEXT:
                raise RuntimeError("the deployment handle did not echo the text")

        await rate(http_call, 8, 1.0)  # warm up both ends
        await rate(direct_call, 8, 1.0)
        await rate(handle_call, 8, 1.0)
        runs = [
            {
                "proxy_unary_c1_p50_ms": await p50_ms(http_call, calls),
                "proxy_unary_c64_per_s": await rate(http_call, 64, seconds),
                "direct_ingress_unary_c1_p50_ms": await p50_ms(direct_call, calls),
                "direct_ingress_unary_c64_per_s": await rate(direct_call, 64, seconds),
                "handle_unary_c1_p50_ms": await p50_ms(handle_call, calls),
                "handle_unary_c64_per_s": await rate(handle_call, 64, seconds),
            }
            for _ in range(rounds)
        ]
    return {key: round(statistics.median(run[key] for run in runs), 3) for key in runs[0]}


async def until_answered(path: str, deadline: float) -> tuple[float, int]:
    """Send requests to ``path`` until one succeeds: (seconds from the first send, failures)."""
    failures = 0
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        start = time.perf_counter()
        while not await post(session, path):
            failures += 1
            if time.monotonic() > deadline:
                raise RuntimeError(f"{path} did not answer before the deadline")
        return time.perf_counter() - start, failures


def replicas(app: str) -> int:
    """Replicas of ``app`` in any state (starting, running, stopping)."""
    status = serve.status().applications.get(app)
    if status is None:
        return 0
    return sum(sum(d.replica_states.values()) for d in status.deployments.values())


def wait_for_zero(app: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while replicas(app) > 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{app} did not scale to zero within {seconds} s")
        time.sleep(0.05)


def deploy_to_first_response(loop: asyncio.AbstractEventLoop, app: str) -> tuple[float, int]:
    start = time.perf_counter()
    serve.run(NOOP.bind(), name=app, route_prefix=f"/{app}")
    _, failures = loop.run_until_complete(until_answered(f"/{app}", time.monotonic() + 120))
    elapsed = time.perf_counter() - start
    serve.delete(app)
    return elapsed, failures


def coldstart(loop: asyncio.AbstractEventLoop, rounds: int) -> dict[str, float]:
    """Medians over ``rounds``; each measurement has one more round first, which warms the
    path up and is left out of the median (its failed requests are counted)."""
    deploy, deploy_failures = [], 0
    for i in range(rounds + 1):
        seconds, failures = deploy_to_first_response(loop, f"cold{i}")
        deploy.append(seconds)
        deploy_failures += failures
    serve.run(SCALE_TO_ZERO.bind(), name="zero", route_prefix="/zero")
    wake, wake_failures = [], 0
    for _ in range(rounds + 1):
        wait_for_zero("zero", 120)
        seconds, failures = loop.run_until_complete(until_answered("/zero", time.monotonic() + 120))
        wake.append(seconds)
        wake_failures += failures
    serve.delete("zero")
    return {
        "deploy_to_first_response_s": round(statistics.median(deploy[1:]), 3),
        "deploy_failed_requests": deploy_failures,
        "scale_from_zero_s": round(statistics.median(wake[1:]), 3),
        "scale_from_zero_failed_requests": wake_failures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    data = commands.add_parser("dataplane")
    data.add_argument("--temp-dir", required=True)
    data.add_argument("--seconds", type=float, default=5.0)
    data.add_argument("--calls", type=int, default=400)
    data.add_argument("--rounds", type=int, default=1)
    cold = commands.add_parser("coldstart")
    cold.add_argument("--temp-dir", required=True)
    cold.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        start(args.temp_dir)
        if args.command == "dataplane":
            handle = serve.run(NOOP.bind(), name="noop", route_prefix="/")
            result = loop.run_until_complete(
                dataplane(handle, args.seconds, args.calls, args.rounds)
            )
        else:
            result = coldstart(loop, args.rounds)
    finally:
        killed = stop(loop)
        loop.close()
    print(json.dumps({**result, "processes_killed_after_shutdown": len(killed)}))


if __name__ == "__main__":
    main()
