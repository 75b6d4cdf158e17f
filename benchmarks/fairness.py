"""Fairness under load: with many more callers than a deployment has slots, does every call wait
about as long as the others? The tail of the latency against its median (p99 / p50) says so.

Orchard: ``orchard serve`` on loopback with a deployment of two replicas of a model whose every
call takes 50 ms (``fixed_time/``, four slots per replica: eight in all), and ``--clients``
callers, each sending a unary PostModelOutputs (300 bytes of text) and the next as soon as it is
answered, for ``--seconds`` after ``--warmup`` seconds of the same load. Every call then waits
for one of the eight slots, so its latency is mostly its time in the queue; served first come,
first served, every call waits about as long (the queue's length over the rate slots free up),
and p99 / p50 stays close to 1.

The baseline, measured in the same run with the same client: the bare grpc.aio server
(``bare_echo.py --slots 8 --service-ms 50``), whose calls take 50 ms in one of eight slots that
an ``asyncio.Semaphore`` hands out in arrival order: the ideal first-come-first-served server of
the same model, without Orchard's routing, runner hop or replicas.

Figures (per side, medians over ``--rounds``): p50 and p99 of the latency in ms, their ratio,
and calls/s. Target: Orchard's p99 / p50 at most 3 at 200 clients. ``--smoke`` runs a tiny
load once, to check that the script works.

    .venv/bin/python benchmarks/fairness.py [--clients 200] [--seconds 10] [--warmup 3]
        [--rounds 3] [--smoke]
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
from pathlib import Path

import grpc
from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2 as sc
from common import start_server, stop_server

from orchard.client.nodepool import Nodepool
from orchard.client.uploads import upload_model
from orchard.client.user import User
from orchard.wire import callable_for

HERE = Path(__file__).resolve().parent
REPLICAS = 2
SLOTS_PER_REPLICA = 4  # fixed_time/config.yaml: num_threads
SERVICE_MS = 50.0  # fixed_time/1/model.py: SERVICE_SECONDS
TARGET_P99_OVER_P50 = 3.0


class Caller:
    """Unary calls to one server through one channel."""

    def __init__(self, port: int, pat: str | None, deployment: str | None) -> None:
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.metadata = (("authorization", f"Key {pat}"),) if pat else ()
        text = resources_pb2.Text(raw="x" * 300)
        self.request = service_pb2.PostModelOutputsRequest(
            inputs=[resources_pb2.Input(data=resources_pb2.Data(text=text))]
        )
        if deployment:
            self.request.runner_selector.deployment.id = deployment
        self.failed = 0

    async def call(self) -> None:
        response = await callable_for(self.channel, "PostModelOutputs")(
            self.request, metadata=self.metadata, timeout=120
        )
        if response.status.code != sc.SUCCESS:
            self.failed += 1

    async def load(self, clients: int, warmup: float, seconds: float) -> dict[str, float]:
        """``clients`` callers for ``warmup`` + ``seconds``; the figures of the calls that
        started after the warm-up."""
        start = time.perf_counter()
        measured_from, stop = start + warmup, start + warmup + seconds
        latencies: list[float] = []

        async def client() -> None:
            while (began := time.perf_counter()) < stop:
                await self.call()
                if began >= measured_from:
                    latencies.append(time.perf_counter() - began)

        await asyncio.gather(*(client() for _ in range(clients)))
        return figures(latencies, seconds)

    async def close(self) -> None:
        await self.channel.close()


def figures(latencies: list[float], seconds: float) -> dict[str, float]:
    p50 = statistics.median(latencies)
    p99 = statistics.quantiles(latencies, n=100)[98] if len(latencies) > 1 else p50
    return {
        "p50_ms": round(p50 * 1000, 2),
        "p99_ms": round(p99 * 1000, 2),
        "p99_over_p50": round(p99 / p50, 2),
        "calls_per_s": round(len(latencies) / seconds, 1),
    }


def deploy_fixed_time(port: int, pat: str) -> None:
    """The fixed-time model, deployed with two replicas into the nodepool the server made for
    this host; returns once both are connected."""
    base = f"http://127.0.0.1:{port}"
    version = upload_model(HERE / "fixed_time", user_id="bench", base_url=base, pat=pat)
    user = User(user_id="bench", base_url=base, pat=pat)
    pool = Nodepool("default", compute_cluster_id="local", _client=user)
    model = {"id": "fixed-time", "app_id": "bench", "model_version": {"id": version.id}}
    deployment = pool.create_deployment(
        deployment_id="fixed-dep",
        deployment_config={
            "worker": {"model": model},
            "scheduling_choice": 4,
            "nodepools": [{"id": "default", "compute_cluster": {"id": "local"}}],
            "autoscale_config": {"min_replicas": REPLICAS, "max_replicas": REPLICAS},
        },
    )
    deadline = time.monotonic() + 180
    while deployment.refresh().deployment_metrics.live_replicas < REPLICAS:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the {REPLICAS} replicas of fixed-dep did not connect in 180 s")
        time.sleep(0.1)


def start_bare(slots: int) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "bare_echo.py"),
            "--slots",
            str(slots),
            "--service-ms",
            str(SERVICE_MS),
        ],
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline().split()[1])


async def run(args: argparse.Namespace) -> dict[str, object]:
    pat = secrets.token_hex(16)
    rounds: dict[str, list[dict[str, float]]] = {"bare": [], "orchard": []}
    failed = {"bare": 0, "orchard": 0}
    with tempfile.TemporaryDirectory() as tmp:
        server, port = start_server(Path(tmp) / "home", pat, "--offline")
        bare, bare_port = start_bare(REPLICAS * SLOTS_PER_REPLICA)
        try:
            await asyncio.to_thread(deploy_fixed_time, port, pat)
            sides = {
                "bare": Caller(bare_port, None, None),
                "orchard": Caller(port, pat, "fixed-dep"),
            }
            for _ in range(args.rounds):
                for name, caller in sides.items():
                    rounds[name].append(await caller.load(args.clients, args.warmup, args.seconds))
            for name, caller in sides.items():
                failed[name] = caller.failed
                await caller.close()
        finally:
            bare.communicate("", timeout=30)
            stop_server(server)
    return summarize(args, rounds, failed)


def summarize(
    args: argparse.Namespace, rounds: dict[str, list[dict[str, float]]], failed: dict[str, int]
) -> dict[str, object]:
    median = {
        side: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        for side, runs in rounds.items()
    }
    orchard, bare = median["orchard"], median["bare"]
    return {
        "benchmark": "fairness",
        "setup": {
            "clients": args.clients,
            "replicas": REPLICAS,
            "slots": REPLICAS * SLOTS_PER_REPLICA,
            "service_ms": SERVICE_MS,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "rounds": args.rounds,
        },
        "median": median,
        "rounds": rounds,
        "failed": failed,
        "ratios": {
            "orchard_p99_over_p50": orchard["p99_over_p50"],
            "bare_p99_over_p50": bare["p99_over_p50"],
            "orchard_p50_over_bare": round(orchard["p50_ms"] / bare["p50_ms"], 2),
            "orchard_calls_per_s_over_bare": round(orchard["calls_per_s"] / bare["calls_per_s"], 3),
        },
        "targets": {"orchard_p99_over_p50_max": TARGET_P99_OVER_P50},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="a tiny load, once")
    args = parser.parse_args()
    if args.smoke:
        args.clients, args.seconds, args.warmup, args.rounds = 12, 1.0, 0.3, 1
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=2))
    if any(result["failed"].values()):  # type: ignore[attr-defined]
        raise SystemExit(f"failed calls: {result['failed']}")


if __name__ == "__main__":
    main()
