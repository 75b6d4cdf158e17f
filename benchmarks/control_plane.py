"""Control-plane latency through the SDK with few and with 1,000 deployments stored.

Starts a real `orchard serve` (its own process, SQLite in a temporary home), then measures the
p50 of create / get / list (one page) / delete of a deployment, first with 10 deployments
stored, then with 1,000. The baseline, measured in the same run, is the cheapest
authenticated call (GetUser): the wire and auth floor. What matters is the ratio
1,000 / 10: list latency must not grow with the number of stored rows.

The versions are made without an upload (``create_version``), so the deployments are on a
``local-dev`` cluster, where such versions belong (their runners are attached by hand; the
orchestrator refuses them on its clusters). The server's output goes to a file in its home.

    .venv/bin/python benchmarks/control_plane.py [--rounds 50] [--stored 1000]
"""

from __future__ import annotations

import argparse
import json
import secrets
import tempfile
import time
from pathlib import Path

from common import median_ms, start_server, stop_server

from orchard import User
from orchard.client.nodepool import Nodepool


def deployment_config(model_id: str) -> dict[str, object]:
    return {
        "deployment": {
            "worker": {"model": {"id": model_id, "app_id": "bench"}},
            "scheduling_choice": 4,
            "nodepools": [{"id": "np", "compute_cluster": {"id": "cc"}}],
            "autoscale_config": {"min_replicas": 0, "max_replicas": 1},
        }
    }


def measure(user: User, nodepool: Nodepool, rounds: int) -> dict[str, float]:
    counter = iter(range(10**6))
    pending: list[str] = []

    def create() -> None:
        i = next(counter)
        nodepool.create_deployment(
            deployment_id=f"probe-{i}", deployment_config=deployment_config(f"probe-{i}")
        )
        pending.append(f"probe-{i}")

    def delete() -> None:
        user.delete_deployments([pending.pop()])

    return {
        "create_p50_ms": median_ms(create, rounds),
        "get_p50_ms": median_ms(lambda: nodepool.deployment("d-0"), rounds),
        "list_page_p50_ms": median_ms(
            lambda: list(nodepool.list_deployments(page_no=1, per_page=16)), rounds
        ),
        "delete_p50_ms": median_ms(delete, rounds),
        "getuser_floor_p50_ms": median_ms(lambda: user.get_user_info(), rounds),
    }


def add_deployments(user: User, nodepool: Nodepool, start: int, stop: int) -> None:
    app = user.app("bench")
    for i in range(start, stop):
        app.create_model(f"d-{i}").create_version()
        nodepool.create_deployment(
            deployment_id=f"d-{i}", deployment_config=deployment_config(f"d-{i}")
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--stored", type=int, default=1000)
    args = parser.parse_args()
    pat = secrets.token_hex(16)
    with tempfile.TemporaryDirectory() as home:
        proc, port = start_server(Path(home), pat)
        try:
            base = f"http://127.0.0.1:{port}"
            user = User(user_id="bench", base_url=base, pat=pat)
            user.create_compute_cluster(
                compute_cluster_id="cc",
                compute_cluster_config={
                    "cloud_provider": {"id": "local"},
                    "region": "local",
                    "cluster_type": "local-dev",
                },
            )
            user.compute_cluster("cc").create_nodepool(
                nodepool_id="np",
                nodepool_config={"instance_types": [{"id": "local-cpu-1"}], "max_instances": 1},
            )
            app = user.create_app("bench")
            for i in range(args.rounds):
                app.create_model(f"probe-{i}").create_version()
            nodepool = Nodepool(
                nodepool_id="np", user_id="bench", base_url=base, pat=pat, compute_cluster_id="cc"
            )
            add_deployments(user, nodepool, 0, 10)
            few = measure(user, nodepool, args.rounds)
            started = time.perf_counter()
            add_deployments(user, nodepool, 10, args.stored)
            seeding_s = time.perf_counter() - started
            many = measure(user, nodepool, args.rounds)
        finally:
            stop_server(proc)
    ratios = {k.replace("_p50_ms", ""): round(many[k] / few[k], 2) for k in few}
    print(
        json.dumps(
            {
                "benchmark": "control_plane",
                "rounds": args.rounds,
                "stored_10": few,
                f"stored_{args.stored}": many,
                f"ratio_{args.stored}_over_10": ratios,
                "seed_model_version_and_deployment_per_s": round((args.stored - 10) / seeding_s, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
