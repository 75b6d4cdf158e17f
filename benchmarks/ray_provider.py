"""The ``ray`` provider on this machine: facts about Ray 2.60 here, and Orchard on a Ray cluster
against Orchard on the local provider, measured in the same run.

Everything runs in a private network namespace whose only interface is loopback (Ray binds
some listeners to every interface whatever it is told): this script starts itself again under
``unshare -n`` with ``--inside``, and afterwards kills every process of that namespace by id
(the run fails if one survives). Inside, ``orchard.testing.RayLab`` starts a Ray head and a
worker node (label ``orchard.nodepool=a``, 2 CPUs, token auth), then an ``orchard serve``
process that knows the cluster as ``lab`` (Ray Client, token from a settings file).

Facts (``facts``):

- ``head_start_s`` / ``worker_start_s``: how long ``ray start`` takes for the head and for a
  worker; ``head_pss_mb`` / ``worker_pss_mb``: the proportional set size of the processes each
  left running, once both are up (before Orchard connects);
- ``worker_joins_without_auth_mode``: whether a worker with the token file but without
  ``RAY_AUTH_MODE=token`` joins a head that uses token auth;
- ``driver_pss_mb``: Orchard's Ray driver process for the cluster (what the provider costs the
  server).

Figures (medians over ``--rounds``; the echo example, uploaded and built once first):

- ``deploy_to_first_response_s``: from PostDeployments (``min_replicas: 1``) to the first
  successful unary response of a call sent right after it and held by the server, for the
  local provider and for Ray. On Ray, the first round (``ray_first_deploy_s``, left out of the
  median) also unpacks the package and builds the environment on the node (from uv's cache);
  later rounds reuse them. Each round deletes the deployment and waits until its replica is
  gone;
- ``unary_p50_ms``: p50 of ``--calls`` sequential unary calls (300-byte text) to a deployment
  with one ready replica, local and Ray, alternating rounds.

    .venv/bin/python benchmarks/ray_provider.py [--rounds 3] [--calls 300]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import psutil
from clarifai_grpc.grpc.api import resources_pb2 as r
from clarifai_grpc.grpc.api import service_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2 as sc
from common import start_server, stop_server

from orchard.client.uploads import upload_model
from orchard.testing import RayLab
from orchard.wire import callable_for

HERE = Path(__file__).resolve().parent
ECHO = HERE.parent / "examples" / "models" / "echo"
USER = "bench"
MB = 2**20


class Orchard:
    """Raw V2 calls to an ``orchard serve`` process."""

    def __init__(self, port: int, pat: str) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.metadata = (("authorization", f"Key {pat}"),)
        self.base_url = f"http://127.0.0.1:{port}"
        self.pat = pat

    def call(self, method: str, request: Any) -> Any:
        return callable_for(self.channel, method)(request, metadata=self.metadata, timeout=300)

    def ok(self, method: str, request: Any) -> Any:
        answer = self.call(method, request)
        if answer.status.code != sc.SUCCESS:
            raise RuntimeError(f"{method}: {answer.status.description}")
        return answer

    def deploy(self, dep_id: str, version_id: str, cluster: str, nodepool: str) -> None:
        deployment = r.Deployment(
            id=dep_id,
            worker=r.Worker(
                model=r.Model(
                    id="echo", app_id="examples", model_version=r.ModelVersion(id=version_id)
                )
            ),
            nodepools=[r.Nodepool(id=nodepool, compute_cluster=r.ComputeCluster(id=cluster))],
            autoscale_config=r.AutoscaleConfig(min_replicas=1, max_replicas=1),
        )
        self.ok(
            "PostDeployments",
            service_pb2.PostDeploymentsRequest(
                user_app_id=r.UserAppIDSet(user_id=USER), deployments=[deployment]
            ),
        )

    def predict(self, dep_id: str, text: str = "x" * 300) -> bool:
        request = service_pb2.PostModelOutputsRequest(
            user_app_id=r.UserAppIDSet(user_id=USER, app_id="examples"),
            model_id="echo",
            inputs=[r.Input(data=r.Data(text=r.Text(raw=text)))],
            runner_selector=r.RunnerSelector(deployment=r.Deployment(id=dep_id, user_id=USER)),
        )
        answer = self.call("PostModelOutputs", request)
        return bool(answer.status.code == sc.SUCCESS)

    def delete(self, dep_id: str) -> None:
        self.ok(
            "DeleteDeployments",
            service_pb2.DeleteDeploymentsRequest(
                user_app_id=r.UserAppIDSet(user_id=USER), ids=[dep_id]
            ),
        )


def until(probe: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not probe():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def first_response(orchard: Orchard, dep_id: str, version: str, cluster: str, pool: str) -> float:
    """Seconds from PostDeployments to the first successful response (retried until then)."""
    began = time.perf_counter()
    orchard.deploy(dep_id, version, cluster, pool)
    while not orchard.predict(dep_id):
        if time.perf_counter() - began > 300:
            raise RuntimeError(f"{dep_id} never answered")
    return time.perf_counter() - began


def gone(orchard: Orchard, dep_id: str) -> None:
    """Delete the deployment and wait until no runner of it is left on this machine."""
    orchard.delete(dep_id)

    def no_runner() -> bool:
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if dep_id in " ".join(proc.cmdline()) and "orchard.runners.serve" in " ".join(
                    proc.cmdline()
                ):
                    return False
        return True

    until(no_runner, 120, f"{dep_id}'s runner gone")


def p50_ms(orchard: Orchard, dep_id: str, calls: int) -> float:
    for _ in range(20):
        orchard.predict(dep_id)
    times = []
    for _ in range(calls):
        began = time.perf_counter()
        if not orchard.predict(dep_id):
            raise RuntimeError(f"a call to {dep_id} failed")
        times.append(time.perf_counter() - began)
    return round(statistics.median(times) * 1000, 3)


def inside(temp: Path, rounds: int, calls: int) -> dict[str, Any]:
    lab = RayLab(temp)
    facts: dict[str, Any] = {}
    server = None
    try:
        facts["head_start_s"] = round(lab.start_head(), 1)
        facts["worker_start_s"] = round(
            lab.start_worker(
                {"orchard.nodepool": "a"},
                cpus=2,
                memory=2 * 2**30,
                name="a",
                env={"ORCHARD_RAY_CACHE": str(temp / "cache-a")},
            ),
            1,
        )
        facts["head_pss_mb"] = round(lab.memory("head") / MB)
        facts["worker_pss_mb"] = round(lab.memory("a") / MB)
        try:
            lab.start_worker({"orchard.nodepool": "x"}, name="no-auth-mode", auth_mode=False)
            facts["worker_joins_without_auth_mode"] = True
        except RuntimeError:
            facts["worker_joins_without_auth_mode"] = False
        settings = temp / "ray.yaml"
        settings.write_text(
            json.dumps(
                {
                    "clusters": {
                        "lab": {
                            "address": lab.client_address,
                            "auth_token_file": str(lab.token_file),
                        }
                    }
                }
            )
        )
        pat = secrets.token_hex(16)
        server, port = start_server(temp / "home", pat, "--offline", "--ray-config", str(settings))
        orchard = Orchard(port, pat)
        figures = measure(orchard, psutil.Process(server.pid), rounds, calls)
        facts["driver_pss_mb"] = figures.pop("driver_pss_mb")
        return {"facts": facts, **figures}
    finally:
        if server is not None:
            stop_server(server)
        survivors = lab.stop()
        if survivors:
            raise RuntimeError(f"Ray processes survived: {survivors}")


def measure(orchard: Orchard, server: psutil.Process, rounds: int, calls: int) -> dict[str, Any]:
    uid = r.UserAppIDSet(user_id=USER)
    orchard.ok(
        "PostComputeClusters",
        service_pb2.PostComputeClustersRequest(
            user_app_id=uid,
            compute_clusters=[
                r.ComputeCluster(
                    id="rc",
                    cloud_provider=r.CloudProvider(id="ray"),
                    region="lab",
                    cluster_type="dedicated",
                )
            ],
        ),
    )
    listing = service_pb2.ListInstanceTypesRequest(
        cloud_provider=r.CloudProvider(id="ray"), region="lab"
    )
    until(  # the server connects to the cluster as it starts; this waits for that
        lambda: orchard.call("ListInstanceTypes", listing).status.code == sc.SUCCESS,
        300,
        "the Ray cluster's instance types",
    )
    orchard.ok(
        "PostNodepools",
        service_pb2.PostNodepoolsRequest(
            user_app_id=uid,
            compute_cluster_id="rc",
            nodepools=[
                r.Nodepool(id="pa", instance_types=[r.InstanceType(id="a")], max_instances=1)
            ],
        ),
    )
    version = upload_model(ECHO, user_id=USER, base_url=orchard.base_url, pat=orchard.pat).id
    where = {"local": ("local", "default"), "ray": ("rc", "pa")}
    deploy: dict[str, list[float]] = {"local": [], "ray": []}
    for i in range(rounds + 1):
        for kind, (cc, pool) in where.items():
            dep_id = f"{kind}-{i}"
            deploy[kind].append(first_response(orchard, dep_id, version, cc, pool))
            gone(orchard, dep_id)
    p50: dict[str, list[float]] = {"local": [], "ray": []}
    for kind, (cc, pool) in where.items():
        orchard.deploy(f"steady-{kind}", version, cc, pool)
        until(lambda k=kind: orchard.predict(f"steady-{k}"), 300, f"steady-{kind}")
    for _ in range(rounds):
        for kind in where:
            p50[kind].append(p50_ms(orchard, f"steady-{kind}", calls))
    drivers = [
        p
        for p in server.children(recursive=True)
        if "orchard.providers.ray_driver" in " ".join(p.cmdline())
    ]
    driver_pss = sum(p.memory_full_info().pss for p in drivers)
    local_p50 = statistics.median(p50["local"])
    ray_p50 = statistics.median(p50["ray"])
    return {
        "deploy_to_first_response_s": {
            "local": round(statistics.median(deploy["local"][1:]), 3),
            "ray": round(statistics.median(deploy["ray"][1:]), 3),
            "ray_first_deploy_s": round(deploy["ray"][0], 3),
        },
        "unary_p50_ms": {"local": local_p50, "ray": ray_p50},
        "ratios": {"unary_p50_ray_over_local": round(ray_p50 / local_p50, 3)},
        "driver_pss_mb": round(driver_pss / MB),
    }


def netns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def outside(rounds: int, calls: int) -> dict[str, Any]:
    """Run this script with ``--inside`` in a new loopback-only network namespace; kill what
    that namespace still holds afterwards, by process id."""
    temp = Path(tempfile.mkdtemp(prefix="orchard-rayp-", dir="/tmp"))
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(temp / "ray-token"),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    command = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"']
    command += [sys.executable, __file__, "--inside", str(temp)]
    command += ["--rounds", str(rounds), "--calls", str(calls)]
    own = netns(os.getpid())
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        child = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        namespace = None
        try:
            while namespace is None and child.poll() is None:
                current = netns(child.pid)
                namespace = current if current not in (None, own) else None
            child.wait(timeout=1800)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            left = [p for p in psutil.process_iter() if namespace and netns(p.pid) == namespace]
            for proc in left:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
            _, alive = psutil.wait_procs(left, timeout=30)
            subprocess.run(["rm", "-rf", str(temp)], check=False)
        out.seek(0)
        err.seek(0)
        lines = out.read().decode(errors="replace").strip().splitlines()
        stderr = err.read().decode(errors="replace")
    if alive:
        raise RuntimeError(f"processes survived being killed: {[p.pid for p in alive]}")
    if child.returncode != 0 or not lines:
        raise RuntimeError(f"the run inside the namespace failed:\n{stderr[-4000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--inside", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside is not None:
        print(json.dumps(inside(args.inside, args.rounds, args.calls)))
        return
    result = {
        "benchmark": "ray_provider",
        "ray": "ray[default]==2.60.0",
        "rounds": args.rounds,
        **outside(args.rounds, args.calls),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
