"""Cold starts: how long a new deployment, and a deployment at zero replicas, take to answer,
for Orchard and for Ray Serve in the same run.

Orchard (``orchard serve`` on loopback, the no-op model uploaded once, so its environment is
built and cached before any timing):

- deploy_to_first_response: from PostDeployments (``min_replicas: 1``) to the first
  successful response of a PostModelOutputs sent right after it (held by the server while the
  replica starts);
- zero_to_response: a request to a deployment that has scaled to zero replicas
  (``min_replicas: 0``), to its response; the deployment is first left idle until the server
  reports no replica for it.

Orchard runs twice, each with a server of its own: with its replica sandbox (``--sandbox
bwrap``, the default where bubblewrap runs) and without (``--sandbox none``), so that what the
sandbox costs a cold start is measured in the same run (target: sandboxed at most 1.2x). The
two servers run side by side and take turns round by round.

Ray Serve (``ray_serve.measure_coldstart``, in its own venv and a loopback-only network
namespace): ``serve.run`` of the same no-op to its first response through the HTTP proxy, and
a request to a ``min_replicas=0`` deployment at zero replicas to its response.

Every figure is the median over ``--rounds`` (each side runs one round more first, which warms
its path up and is left out); failed requests are counted, and must be zero.

    .venv/bin/python benchmarks/coldstart.py [--rounds 5] [--no-ray] [--no-sandbox]
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2 as sc
from common import start_server, stop_server
from ray_serve import REQUIREMENTS as RAY_REQUIREMENTS
from ray_serve import measure_coldstart as ray_serve_coldstart

from orchard.client.uploads import upload_model
from orchard.wire import callable_for

HERE = Path(__file__).resolve().parent
USER = "bench"


class Orchard:
    def __init__(self, port: int, pat: str) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.metadata = (("authorization", f"Key {pat}"),)
        self.failed = 0

    def call(self, method: str, request: Any) -> Any:
        return callable_for(self.channel, method)(request, metadata=self.metadata, timeout=120)

    def deploy(self, dep_id: str, version_id: str, **autoscale: int) -> None:
        deployment = resources_pb2.Deployment(
            id=dep_id,
            worker=resources_pb2.Worker(
                model=resources_pb2.Model(
                    id="noop",
                    app_id="bench",
                    model_version=resources_pb2.ModelVersion(id=version_id),
                )
            ),
            nodepools=[
                resources_pb2.Nodepool(
                    id="default", compute_cluster=resources_pb2.ComputeCluster(id="local")
                )
            ],
            scheduling_choice=4,
            autoscale_config=resources_pb2.AutoscaleConfig(**autoscale),
        )
        response = self.call(
            "PostDeployments", service_pb2.PostDeploymentsRequest(deployments=[deployment])
        )
        assert response.status.code == sc.SUCCESS, response.status

    def delete(self, dep_id: str) -> None:
        self.call("DeleteDeployments", service_pb2.DeleteDeploymentsRequest(ids=[dep_id]))

    def predict(self, dep_id: str) -> None:
        request = service_pb2.PostModelOutputsRequest(
            inputs=[
                resources_pb2.Input(data=resources_pb2.Data(text=resources_pb2.Text(raw="x" * 300)))
            ],
            runner_selector=resources_pb2.RunnerSelector(
                deployment=resources_pb2.Deployment(id=dep_id, user_id=USER)
            ),
        )
        if self.call("PostModelOutputs", request).status.code != sc.SUCCESS:
            self.failed += 1

    def replicas(self, dep_id: str) -> int:
        """Replicas the server runs for the deployment (starting, ready or draining)."""
        response = self.call(
            "ListRunners", service_pb2.ListRunnersRequest(compute_cluster_id="local")
        )
        return sum(
            r.num_replicas
            for r in response.runners
            if r.metadata.fields.get("orchard.deployment")
            and r.metadata["orchard.deployment"] == dep_id
        )

    def wait_until(self, done: Any, what: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.05)


def seconds(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


QUICK = {  # a deployment that goes back to zero replicas a second after its last call
    "min_replicas": 0,
    "max_replicas": 1,
    "traffic_history_seconds": 1,
    "scale_up_delay_seconds": 1,
    "scale_down_delay_seconds": 1,
    "scale_to_zero_delay_seconds": 1,
}


class Stand:
    """One ``orchard serve`` with the given ``--sandbox``, the no-op model uploaded."""

    def __init__(self, home: Path, sandbox: str) -> None:
        pat = secrets.token_hex(16)
        self.server, port = start_server(home, pat, "--offline", "--sandbox", sandbox)
        base = f"http://127.0.0.1:{port}"
        self.version = upload_model(HERE / "noop", user_id=USER, base_url=base, pat=pat).id
        self.orchard = Orchard(port, pat)
        self.deploys: list[float] = []
        self.zeros: list[float] = []

    def deploy_once(self, n: int) -> None:
        """A new deployment to its first response, then gone again."""
        orchard, dep_id = self.orchard, f"new-{n}"

        def first_response() -> None:
            orchard.deploy(dep_id, self.version, min_replicas=1, max_replicas=1)
            orchard.predict(dep_id)

        self.deploys.append(seconds(first_response))
        orchard.delete(dep_id)
        orchard.wait_until(lambda: orchard.replicas(dep_id) == 0, "replicas gone")

    def zero_once(self) -> None:
        """A call to the deployment ``zero`` once it has no replica, to its response."""
        orchard = self.orchard
        orchard.wait_until(lambda: orchard.replicas("zero") == 0, "scale to zero")
        self.zeros.append(seconds(lambda: orchard.predict("zero")))

    def figures(self) -> dict[str, float]:
        return {  # the first round warmed the path up and is left out
            "deploy_to_first_response_s": round(statistics.median(self.deploys[1:]), 3),
            "zero_to_response_s": round(statistics.median(self.zeros[1:]), 3),
            "failed_requests": self.orchard.failed,
        }

    def close(self) -> None:
        self.orchard.channel.close()
        stop_server(self.server)


def measure_orchard(rounds: int, sandboxes: list[str]) -> dict[str, dict[str, float]]:
    """Each sandbox's figures; the servers run side by side and take turns, round by round, so
    that what the machine does meanwhile weighs on all of them alike."""
    with tempfile.TemporaryDirectory() as tmp:
        stands: dict[str, Stand] = {}
        try:
            for sandbox in sandboxes:
                stands[sandbox] = Stand(Path(tmp) / sandbox, sandbox)
            for n in range(rounds + 1):
                for stand in stands.values():
                    stand.deploy_once(n)
            for stand in stands.values():
                stand.orchard.deploy("zero", stand.version, **QUICK)
            for _ in range(rounds + 1):
                for stand in stands.values():
                    stand.zero_once()
            return {sandbox: stand.figures() for sandbox, stand in stands.items()}
        finally:
            for stand in stands.values():
                stand.close()


def _ratio(top: dict[str, Any], bottom: dict[str, Any], key: str) -> float:
    return round(top[key] / bottom[key], 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray Serve comparison")
    parser.add_argument(
        "--no-sandbox", action="store_true", help="only Orchard unsandboxed (no bubblewrap here)"
    )
    args = parser.parse_args()
    result: dict[str, Any] = {"benchmark": "coldstart", "rounds": args.rounds}
    measured = measure_orchard(args.rounds, ["none"] if args.no_sandbox else ["none", "bwrap"])
    bare, orchard = measured["none"], measured.get("bwrap", measured["none"])
    result |= {"orchard": orchard, "orchard_unsandboxed": bare}
    ratios = result["ratios"] = {
        "deploy_sandboxed_over_unsandboxed": _ratio(orchard, bare, "deploy_to_first_response_s"),
        "zero_sandboxed_over_unsandboxed": _ratio(orchard, bare, "zero_to_response_s"),
    }
    targets = result["targets"] = {"sandboxed_over_unsandboxed_max": 1.2}
    if not args.no_ray:
        ray = ray_serve_coldstart(args.rounds)
        result["ray_serve"] = {"ray": RAY_REQUIREMENTS[0], **ray}
        ray_figures = {
            "deploy_to_first_response_s": ray["deploy_to_first_response_s"],
            "zero_to_response_s": ray["scale_from_zero_s"],
        }
        for name, key in (("deploy", "deploy_to_first_response_s"), ("zero", "zero_to_response_s")):
            ratios[f"{name}_orchard_over_ray"] = _ratio(orchard, ray_figures, key)
        targets |= {"deploy_orchard_over_ray_max": 0.4, "zero_orchard_over_ray_max": 0.4}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
