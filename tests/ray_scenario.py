"""The ``ray`` provider against a real Ray cluster: run by ``test_ray_provider.py`` as
``python -m tests.ray_scenario --temp DIR`` inside a network namespace whose only interface is
loopback (Ray binds some listeners to every interface), where this process starts everything:
a Ray head and two worker nodes (labels ``orchard.nodepool=a`` and ``=b``, token auth), an
Orchard server that knows the cluster as ``lab`` (through Ray Client), and the scenario. It
prints what it saw as one JSON object on its last stdout line, and always stops every Ray
process it started, by process id. Its environment must hold ``RayLab``'s token settings
(``RAY_AUTH_MODE=token``, ``RAY_AUTH_TOKEN_PATH=DIR/ray-token``) before Ray is imported.

The scenario: a deployment of the echo example spanning nodepools ``pa`` (group a) and ``pb``
(group b) places one replica on each group's node (Ray's own view of its actors); it serves
predict, generate and stream; the cluster made unreachable for a while (its head paused) marks
the nodepools ERROR with the reason while predictions go on, and READY again once it is back;
Orchard's Ray driver killed does the same, and the driver started again adopts the same
actors; node b killed (every process of it, as if its machine died) loses its replica, which
is replaced on node a while unary calls keep succeeding; deleting the deployment leaves no
actor.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import grpc
import psutil
import ray
from clarifai_grpc.grpc.api import resources_pb2 as r
from clarifai_grpc.grpc.api import service_pb2
from ray.util.state import list_actors

from orchard.client.model import Model
from orchard.client.uploads import upload_model
from orchard.providers.ray import RayClusterConfig
from orchard.testing import RayLab, ServerThread
from tests.conftest import Api
from tests.resources import EXAMPLES, SUCCESS, make_cluster, make_nodepool, ok
from tests.waiting import wait_for

NAMESPACE = "orchard"
ERROR = r.Nodepool.NodepoolStatus.NODEPOOL_STATUS_ERROR
READY = r.Nodepool.NodepoolStatus.NODEPOOL_STATUS_READY


class Scenario:
    def __init__(self, temp: Path) -> None:
        self.temp = temp
        self.lab = RayLab(temp)
        self.report: dict[str, Any] = {}
        self.server: ServerThread | None = None

    # -- Ray's own view ------------------------------------------------------------------------

    def actors(self) -> list[tuple[str, str]]:
        """(actor name, label orchard.nodepool of its node) for each live actor of Orchard's
        namespace, as Ray's state API reports them."""
        labels = {n["NodeID"]: n.get("Labels", {}) for n in ray.nodes()}
        found = list_actors(
            filters=[("state", "=", "ALIVE"), ("ray_namespace", "=", NAMESPACE)],
            detail=True,
            raise_on_missing_output=False,
        )
        return sorted(
            (a.name, labels.get(a.node_id, {}).get("orchard.nodepool", "?")) for a in found
        )

    # -- the steps ---------------------------------------------------------------------------

    def start_ray(self) -> None:
        self.report["head_start_s"] = round(self.lab.start_head(), 1)
        for group in ("a", "b"):
            self.lab.start_worker(
                {"orchard.nodepool": group},
                cpus=2,
                memory=2 * 2**30,
                name=group,
                env={"ORCHARD_RAY_CACHE": str(self.temp / f"cache-{group}")},
            )
        ray.init(
            address=self.lab.address,
            _node_ip_address="127.0.0.1",
            logging_level="WARNING",
            log_to_driver=False,
            namespace="x",
        )

    def start_orchard(self) -> Api:
        config = RayClusterConfig("lab", self.lab.client_address, self.lab.token_file)
        self.server = ServerThread(
            self.temp / "home",
            offline=True,
            orchestrate=True,
            drain_seconds=5.0,
            ray_clusters=[config],
        ).start()
        channel = grpc.insecure_channel(f"127.0.0.1:{self.server.port}")
        return Api(channel, self.server.pat, self.server.user_id)

    def catalogue(self, api: Api) -> None:
        ray_provider = r.CloudProvider(id="ray")
        regions = ok(
            api.call(
                "ListCloudRegions", service_pb2.ListCloudRegionsRequest(cloud_provider=ray_provider)
            )
        )
        listing = service_pb2.ListInstanceTypesRequest(cloud_provider=ray_provider, region="lab")
        # The server connects to the cluster when it starts; on a busy machine that can take
        # longer than one call waits for it.
        types = wait_for(
            lambda: (
                (answer := api.call("ListInstanceTypes", listing)).status.code == SUCCESS and answer
            ),
            timeout=180,
            what="the Ray cluster's instance types",
        )
        self.report["regions"] = list(regions.regions)
        self.report["instance_types"] = {
            t.id: [t.compute_info.cpu_limit, t.compute_info.cpu_memory]
            for t in types.instance_types
        }
        make_cluster(api, "rc", cloud_provider={"id": "ray"}, region="lab")
        for pool, group in (("pa", "a"), ("pb", "b")):
            make_nodepool(api, "rc", pool, instance_types=[{"id": group}], max_instances=1)
        too_big = api.call(
            "PostNodepools",
            compute_cluster_id="rc",
            nodepools=[
                r.Nodepool(
                    id="huge",
                    instance_types=[
                        r.InstanceType(
                            id="a", compute_info=r.ComputeInfo(cpu_limit="64", cpu_memory="1Gi")
                        )
                    ],
                    max_instances=1,
                )
            ],
        )
        self.report["too_big_refused"] = too_big.status.description
        make_nodepool(api, "rc", "pmin", instance_types=[{"id": "b"}], min_instances=2)
        self.report["statuses"] = {k: v[1] for k, v in self.statuses(api).items()}
        ok(api.call("DeleteNodepools", compute_cluster_id="rc", ids=["pmin"]))

    def deploy(self, api: Api) -> Model:
        assert self.server is not None
        version = upload_model(
            EXAMPLES / "echo",
            user_id=self.server.user_id,
            base_url=self.server.base_url,
            pat=self.server.pat,
        )
        began = time.perf_counter()
        ok(
            api.call(
                "PostDeployments",
                deployments=[
                    r.Deployment(
                        id="echo-ray",
                        worker=r.Worker(
                            model=r.Model(
                                id="echo",
                                app_id="examples",
                                model_version=r.ModelVersion(id=version.id),
                            )
                        ),
                        nodepools=[
                            r.Nodepool(id=pool, compute_cluster=r.ComputeCluster(id="rc"))
                            for pool in ("pa", "pb")
                        ],
                        scheduling_choice=6,  # least used nodepool first: one replica per pool
                        autoscale_config=r.AutoscaleConfig(min_replicas=2, max_replicas=2),
                    )
                ],
            )
        )
        model = Model(
            url=f"{self.server.user_id}/examples/models/echo",
            base_url=self.server.base_url,
            pat=self.server.pat,
            deployment_id="echo-ray",
        )
        answer = model.predict_by_bytes(b"first", input_type="text")
        self.report["deploy_to_first_response_s"] = round(time.perf_counter() - began, 2)
        assert answer.outputs[0].data.text.raw == "first"
        return model

    def live(self, api: Api) -> int:
        dep = api.call(
            "GetDeployment",
            user_app_id=r.UserAppIDSet(user_id=api.user_id),
            deployment_id="echo-ray",
        ).deployment
        return int(dep.deployment_metrics.live_replicas)

    def placement(self, api: Api) -> None:
        wait_for(lambda: self.live(api) == 2, timeout=180, what="two live replicas")
        self.report["placed"] = [group for _, group in self.actors()]

    def shapes(self, model: Model) -> None:
        unary = model.predict_by_bytes(b"hello", input_type="text").outputs[0].data.text.raw
        words = [
            x.outputs[0].data.text.raw.strip()
            for x in model.generate_by_bytes(b"to be sent", input_type="text", method="generate")
        ]
        echoed = [
            x.outputs[0].data.text.raw
            for x in model.stream_by_bytes(
                iter([b"one", b"two"]), input_type="text", method="stream"
            )
        ]
        self.report["shapes"] = {"predict": unary, "generate": words, "stream": echoed}
        times = []
        for _ in range(200):
            start = time.perf_counter()
            model.predict_by_bytes(b"x" * 300, input_type="text")
            times.append(time.perf_counter() - start)
        self.report["unary_p50_ms"] = round(statistics.median(times) * 1000, 2)

    def statuses(self, api: Api) -> dict[str, tuple[int, str]]:
        pools = ok(api.call("ListNodepools", compute_cluster_id="rc")).nodepools
        return {p.id: (p.status, p.status_description) for p in pools}

    def unreachable(self, api: Api, model: Model) -> None:
        """The head paused (SIGSTOP): the cluster cannot answer, the nodepools say so, the
        replicas (which talk to Orchard, not to the head) keep serving; resumed, all is well."""
        self.lab.pause_node("head")
        try:
            seen = wait_for(
                lambda: (s := self.statuses(api)) and all(v[0] == ERROR for v in s.values()) and s,
                timeout=25,
                what="nodepools in ERROR while the Ray head is paused",
            )
            served = model.predict_by_bytes(b"still", input_type="text").outputs[0].data.text.raw
        finally:
            self.lab.pause_node("head", pause=False)
        wait_for(
            lambda: all(v[0] == READY for v in self.statuses(api).values()),
            timeout=60,
            what="nodepools READY again after the head resumed",
        )
        self.report["unreachable"] = {"status": seen["pa"][1], "served_meanwhile": served}

    def driver_restart(self, api: Api, model: Model) -> None:
        """Orchard's Ray driver killed: the nodepools say so, the replicas keep serving, and
        the driver started again adopts the same actors (none is replaced)."""
        before = self.actors()
        drivers = [
            p
            for p in psutil.Process().children(recursive=True)
            if "orchard.providers.ray_driver" in " ".join(p.cmdline())
        ]
        for driver in drivers:
            driver.kill()
        seen = wait_for(
            lambda: (s := self.statuses(api)) and s["pa"][0] == ERROR and s,
            timeout=30,
            what="nodepools in ERROR once the driver is gone",
        )
        served = model.predict_by_bytes(b"still", input_type="text").outputs[0].data.text.raw
        wait_for(
            lambda: all(v[0] == READY for v in self.statuses(api).values()),
            timeout=120,
            what="nodepools READY with a new driver",
        )
        wait_for(lambda: self.live(api) == 2, timeout=60, what="two live replicas")
        self.report["driver_restart"] = {
            "drivers_killed": len(drivers),
            "status": seen["pa"][1],
            "served_meanwhile": served,
            "same_actors": self.actors() == before,
        }

    def node_death(self, api: Api, model: Model) -> None:
        """Node b killed while unary calls run in a loop: none may fail (the SDK retries what
        the server answers while the deployment recovers), and the lost replica comes back on
        node a."""
        calls = {"ok": 0, "failed": 0, "errors": []}
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                try:
                    model.predict_by_bytes(b"during", input_type="text")
                    calls["ok"] += 1
                except Exception as exc:
                    calls["failed"] += 1
                    calls["errors"].append(repr(exc)[:300])

        worker = threading.Thread(target=load, daemon=True)
        worker.start()
        wait_for(lambda: calls["ok"] >= 20, timeout=30, what="calls flowing")
        began = time.perf_counter()
        self.lab.kill_node("b")
        wait_for(
            lambda: [g for _, g in self.actors()] == ["a", "a"] and self.live(api) == 2,
            timeout=180,
            what="the lost replica replaced on node a",
        )
        self.report["replaced_after_s"] = round(time.perf_counter() - began, 1)
        ok_before = calls["ok"]
        wait_for(lambda: calls["ok"] >= ok_before + 20, timeout=30, what="calls after recovery")
        stop.set()
        worker.join(timeout=60)
        self.report["node_death"] = {
            "placed": [g for _, g in self.actors()],
            "calls_ok": calls["ok"],
            "calls_failed": calls["failed"],
            "errors": calls["errors"][:5],
        }

    def delete(self, api: Api) -> None:
        ok(
            api.call(
                "DeleteDeployments",
                user_app_id=r.UserAppIDSet(user_id=api.user_id),
                ids=["echo-ray"],
            )
        )
        wait_for(lambda: not self.actors(), timeout=90, what="no actor left")
        self.report["actors_after_delete"] = self.actors()

    def run(self) -> None:
        self.start_ray()
        api = self.start_orchard()
        self.catalogue(api)
        model = self.deploy(api)
        self.placement(api)
        self.shapes(model)
        self.unreachable(api, model)
        self.driver_restart(api, model)
        self.node_death(api, model)
        self.delete(api)

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
        ray.shutdown()
        self.report["survivors"] = self.lab.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--temp", type=Path, required=True)
    args = parser.parse_args()
    scenario = Scenario(args.temp)
    try:
        scenario.run()
    except BaseException:
        scenario.report["error"] = traceback.format_exc()[-4000:]
    finally:
        try:
            scenario.close()
        except BaseException:
            scenario.report["close_error"] = traceback.format_exc()[-2000:]
    sys.stdout.flush()
    print(json.dumps(scenario.report))


if __name__ == "__main__":
    main()
