"""The REST/JSON view against gRPC on the same server, deployment and replica, in one run.

Orchard (``orchard serve``, with the no-op model deployed as in ``dataplane.py``) answers
PostModelOutputs by deployment twice: over gRPC (``dataplane.Target``) and over HTTP/1.1 JSON
at ``POST /v2/users/bench/deployments/noop-dep/outputs`` from an aiohttp client with a
keep-alive connection pool (one connection per call in flight). The request is the same
300-byte text input. These machines are noisy, so each round interleaves the two sides (the
concurrency-1 calls ten at a time, the concurrency-64 load in half-second windows) for both to
see the same load from the rest of the machine; the figures are medians over the rounds.

- unary_c1_p50_ms: p50 latency, one call at a time;
- unary_c64_per_s: calls/s with 64 calls in flight (``--seconds`` per side and round);
- server_cpu_us_per_call: the server process's CPU time per call at concurrency 1 (the
  replica's not included), which the machine's other load disturbs least.

The same run then measures the OpenAI-compatible path (``openai_stream``): tiny-chat's streamed
completions through ``/v2/ext/openai/v1`` against its class called in this process, chunks/s
(target ≥ 0.5x; ``--openai-tokens 0`` leaves it out). Other sections can be added by passing
``sections`` to :func:`run`: each gets the running :class:`Stack` and returns its figures.

    .venv/bin/python benchmarks/http_api.py [--seconds 5] [--calls 400] [--rounds 3]
        [--openai-tokens 256] [--openai-calls 8]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psutil
from clarifai_grpc.grpc.api import resources_pb2
from common import http_port, start_server, stop_server
from dataplane import Target, calls_per_second, deploy_noop
from openai_stream import TINY_CHAT, deploy, medians
from openai_stream import compare as compare_openai

DEPLOYMENT = "noop-dep"
USER = "bench"


@dataclass(frozen=True)
class Stack:
    """The running server a section measures: its addresses, the PAT and the deployment."""

    grpc_address: str
    http_base: str
    pat: str
    user_id: str = USER
    deployment_id: str = DEPLOYMENT
    server_pid: int = 0


Section = Callable[[Stack, argparse.Namespace], Awaitable[dict[str, object]]]


class RestTarget:
    """PostModelOutputs by deployment over REST, from one keep-alive connection pool."""

    def __init__(self, stack: Stack, pool: int = 64) -> None:
        self.url = (
            f"{stack.http_base}/v2/users/{stack.user_id}/deployments/{stack.deployment_id}/outputs"
        )
        self.headers = {"Authorization": f"Key {stack.pat}", "Content-Type": "application/json"}
        self.body = json.dumps({"inputs": [{"data": {"text": {"raw": "x" * 300}}}]}).encode()
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=pool))

    async def unary(self) -> None:
        async with self.session.post(self.url, data=self.body, headers=self.headers) as answer:
            reply = await answer.json()
        assert answer.status == 200 and reply["status"]["code"] == 10000, reply

    async def unary_rate(self, concurrency: int, seconds: float) -> float:
        return await calls_per_second(self.unary, concurrency, seconds)

    async def close(self) -> None:
        await self.session.close()


Side = Target | RestTarget
WINDOW_S = 0.5  # the concurrency-64 measure alternates the sides in windows this long


async def call_times(side: Side, calls: int) -> list[float]:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        await side.unary()
        times.append(time.perf_counter() - start)
    return times


def cpu_seconds(process: psutil.Process) -> float:
    """The process's CPU time: summed over its threads' schedstat (nanoseconds) on Linux, as
    the clock-tick counts of cpu_times are too coarse for a batch of ten calls."""
    total = 0
    try:
        for task in Path(f"/proc/{process.pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):  # a thread that just ended
                total += int((task / "schedstat").read_text().split()[0])
    except FileNotFoundError:
        times = process.cpu_times()
        return float(times.user + times.system)
    return total / 1e9


async def measure(
    grpc_side: Side, rest_side: Side, server: psutil.Process, args: argparse.Namespace
) -> dict[str, dict[str, float]]:
    """One round of both sides, interleaved so that both see the same load from the rest of
    the machine: the calls at concurrency 1 in batches of ten (with the server process's CPU
    time for each batch), the concurrency-64 windows one after the other."""
    sides = {"grpc": grpc_side, "rest": rest_side}
    for side in sides.values():
        await side.unary_rate(8, 0.25)  # warm up both ends (and fill the pool)
    times: dict[str, list[float]] = {name: [] for name in sides}
    cpu = dict.fromkeys(sides, 0.0)
    for _ in range(max(1, args.calls // 10)):
        for name, side in sides.items():
            before = cpu_seconds(server)
            times[name] += await call_times(side, 10)
            cpu[name] += cpu_seconds(server) - before
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(max(1, round(args.seconds / WINDOW_S))):
        for name, side in sides.items():
            rates[name].append(await side.unary_rate(64, WINDOW_S))
    return {
        name: {
            "unary_c1_p50_ms": round(statistics.median(times[name]) * 1000, 3),
            "unary_c64_per_s": round(statistics.mean(rates[name]), 1),
            "server_cpu_us_per_call": round(cpu[name] / len(times[name]) * 1e6, 1),
        }
        for name in sides
    }


async def compare(stack: Stack, args: argparse.Namespace) -> dict[str, list[dict[str, float]]]:
    selector = resources_pb2.RunnerSelector(
        deployment=resources_pb2.Deployment(id=stack.deployment_id, user_id=stack.user_id)
    )
    grpc_side = Target(stack.grpc_address, stack.pat, selector)
    rest_side = RestTarget(stack)
    server = psutil.Process(stack.server_pid)
    await grpc_side.unary()  # held until the server's replica is connected
    rounds: dict[str, list[dict[str, float]]] = {"grpc": [], "rest": []}
    try:
        for _ in range(args.rounds):
            figures = await measure(grpc_side, rest_side, server, args)
            rounds["grpc"].append(figures["grpc"])
            rounds["rest"].append(figures["rest"])
    finally:
        await grpc_side.close()
        await rest_side.close()
    return rounds


async def run(
    args: argparse.Namespace, sections: Sequence[tuple[str, Section]] = ()
) -> dict[str, object]:
    """One server, the REST/gRPC comparison, then each extra ``(name, section)`` in turn."""
    pat = secrets.token_hex(16)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        server, port = start_server(home, pat, "--offline", "--http-port", "0")
        try:
            deploy_noop(f"http://127.0.0.1:{port}", pat)
            http_base = f"http://127.0.0.1:{http_port(home)}"
            stack = Stack(f"127.0.0.1:{port}", http_base, pat, server_pid=server.pid)
            rounds = await compare(stack, args)
            extra = {name: await section(stack, args) for name, section in sections}
        finally:
            stop_server(server)
    return summarize(rounds) | extra


async def openai_section(stack: Stack, args: argparse.Namespace) -> dict[str, object]:
    """tiny-chat streamed through the OpenAI-compatible endpoint against its class called in
    this process (``openai_stream.py``'s comparison, on this run's server)."""
    deploy(f"http://{stack.grpc_address}", stack.pat, TINY_CHAT, "tiny-chat")
    sizes = argparse.Namespace(
        tokens=args.openai_tokens, calls=args.openai_calls, rounds=args.rounds, concurrency=1
    )
    base_url = f"{stack.http_base}/v2/ext/openai/v1"
    sides = await compare_openai(base_url, stack.pat, "tiny-chat", TINY_CHAT, sizes)
    return medians(sides) | {"target": "orchard_vs_in_process >= 0.5"}


def summarize(rounds: dict[str, list[dict[str, float]]]) -> dict[str, object]:
    """Medians per side, and the ratios as the median of each round's ratio (a round's two
    sides ran interleaved, under the same load)."""
    med = {
        side: {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}
        for side, runs in rounds.items()
    }

    def ratio(key: str) -> float:
        pairs = zip(rounds["rest"], rounds["grpc"], strict=True)
        return round(statistics.median(rest[key] / grpc[key] for rest, grpc in pairs), 3)

    return {
        "benchmark": "http_api",
        "median": med,
        "rounds": rounds,
        "ratios": {
            "unary_c1_p50_rest_over_grpc": ratio("unary_c1_p50_ms"),
            "unary_c64_rest_over_grpc": ratio("unary_c64_per_s"),
            "server_cpu_per_call_rest_over_grpc": ratio("server_cpu_us_per_call"),
        },
        "targets": {"unary_c1_p50_rest_over_grpc_max": 1.2, "unary_c64_rest_over_grpc_min": 0.9},
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="of concurrency-64 load per side and round"
    )
    parser.add_argument(
        "--calls", type=int, default=400, help="concurrency-1 calls per side and round"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--openai-tokens", type=int, default=256, help="chunks per OpenAI stream (0: no section)"
    )
    parser.add_argument("--openai-calls", type=int, default=8, help="streams per round and side")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    sections = [("openai_stream", openai_section)] if args.openai_tokens else []
    print(json.dumps(asyncio.run(run(args, sections)), indent=2))


if __name__ == "__main__":
    main()
