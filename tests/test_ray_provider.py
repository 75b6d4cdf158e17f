"""The ``ray`` provider: its pure parts (node groups, fit, autoscaler requests, settings), the
provider over a scripted driver link, the server's refusals, and one end-to-end run against a
real Ray cluster started for it on this machine (``tests/ray_scenario.py``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest
from clarifai_grpc.grpc.api.status import status_code_pb2 as sc
from click.testing import CliRunner

from orchard.cli.main import cli
from orchard.providers import ray as ray_provider
from orchard.providers.base import (
    ComputeShape,
    NoCapacity,
    NodepoolInfo,
    ReplicaBundle,
    ReplicaLaunch,
)
from orchard.providers.gpus import Device, GpuNeed
from orchard.providers.ray import (
    INSTALL,
    RayClusterConfig,
    RayProvider,
    cluster_option,
    clusters_file,
    ray_gpus,
)
from orchard.providers.ray_groups import (
    RayNode,
    autoscaler_request,
    check_fit,
    gpu_request,
    node_groups,
    shape_of_resources,
)
from orchard.testing import ServerThread
from tests.conftest import Api
from tests.resources import cluster

GIB = 2**30
ROOT = Path(__file__).resolve().parents[1]


def node(node_id: str, group: str | None, cpus: float = 2, memory: int = 2 * GIB, **more: Any):
    labels = {"orchard.nodepool": group} if group else {}
    return RayNode(
        node_id,
        more.get("alive", True),
        "127.0.0.1",
        labels,
        {"CPU": cpus, "memory": memory} | more.get("resources", {}),
    )


# -- pure parts ----------------------------------------------------------------------------


def test_groups_are_labelled_live_nodes_with_the_smallest_shape() -> None:
    groups = node_groups(
        [
            node("n1", "a", cpus=4),
            node("n2", "a", cpus=2),
            node("n3", "b", alive=False),
            node("head", None),
        ],
        None,
    )
    assert list(groups) == ["a"]
    assert groups["a"].nodes == ("n1", "n2") and groups["a"].shape.cpus == 2
    assert groups["a"].label == "orchard.nodepool" and groups["a"].max_nodes is None


def test_autoscaler_node_types_are_groups_even_without_nodes() -> None:
    config = {"groups": [{"name": "gpu", "resources": {"CPU": 8, "GPU": 1}, "min": 0, "max": 4}]}
    groups = node_groups([], config)
    assert groups["gpu"].nodes == () and (groups["gpu"].min_nodes, groups["gpu"].max_nodes) == (
        0,
        4,
    )
    assert groups["gpu"].label == "ray.io/node-group"
    assert groups["gpu"].shape.num_accelerators == 1


def test_a_node_shape_reads_gpus_and_their_type() -> None:
    shape = shape_of_resources(
        {"CPU": 8, "GPU": 2, "memory": 3 * GIB + 5, "accelerator_type:H100": 1}, {}
    )
    assert shape == ComputeShape(8, 3 * GIB, 2, ("H100",))
    assert (
        shape_of_resources({"CPU": 1}, {"ray.io/accelerator-type": "A10G"}).accelerator_types == ()
    )


def test_an_instance_type_must_fit_a_node_of_its_group() -> None:
    group = node_groups([node("n1", "a", cpus=2, memory=GIB)], None)["a"]
    assert check_fit(ComputeShape(2, GIB), group) == []
    problems = dict(check_fit(ComputeShape(3, 2 * GIB, 1), group))
    assert "3 CPUs requested but a node of Ray group 'a' has 2" in problems["cpu_limit"]
    assert "lower cpu_memory" in problems["cpu_memory"]
    assert "1 GPU(s) requested" in problems["num_accelerators"]


def pool(name: str, group: str, minimum: int = 0, maximum: int = 3) -> NodepoolInfo:
    return NodepoolInfo(f"u/cc/{name}", "lab", group, ComputeShape(2, GIB), minimum, maximum)


def test_the_autoscaler_is_asked_for_min_instances_or_one_more_than_held() -> None:
    groups = node_groups([node("n1", "a")], {"groups": [{"name": "b", "resources": {}}]})
    bundles, selectors = autoscaler_request(
        [pool("pa", "a", minimum=2), pool("pb", "b", maximum=1), pool("px", "missing")],
        held={"u/cc/pb": 1},
        short={"u/cc/pb"},
        groups=groups,
    )
    assert bundles == [{"CPU": 2, "memory": GIB}] * 3  # 2 for pa's minimum, pb capped at 1
    assert selectors == [{"orchard.nodepool": "a"}] * 2 + [{"ray.io/node-group": "b"}]


@pytest.mark.parametrize(
    ("count", "gib", "device_gib", "need", "num_gpus"),
    [
        (1, 40, 80, GpuNeed(1, 40 * GIB, shared=True), 0.5),
        (1, 1, 3, GpuNeed(1, GIB, shared=True), 0.3334),  # rounded up to Ray's step
        (1, 80, 80, GpuNeed(1, 80 * GIB, shared=True), 1),
        (1, 40, 0, GpuNeed(1, 40 * GIB), 1),  # the nodepool does not say what a GPU has
        (1, 0, 80, GpuNeed(1, 0), 1),  # the model does not say what it needs
        (2, 40, 80, GpuNeed(2, 40 * GIB), 2),  # Ray shares only one device
        (0, 0, 80, GpuNeed(0, 0), 0),
    ],
)
def test_a_replica_asks_ray_for_a_fraction_of_one_gpu_or_whole_gpus(
    count: int, gib: int, device_gib: int, need: GpuNeed, num_gpus: float
) -> None:
    assert gpu_request(count, gib * GIB, device_gib * GIB) == (need, num_gpus)


def test_settings_name_clusters_on_the_command_line_or_in_a_file(tmp_path: Path) -> None:
    assert cluster_option("prod=ray://10.0.0.5:10001") == RayClusterConfig(
        "prod", "ray://10.0.0.5:10001"
    )
    with pytest.raises(ValueError, match="NAME=ADDRESS"):
        cluster_option("ray://10.0.0.5:10001")
    settings = tmp_path / "ray.yaml"
    settings.write_text(
        "clusters:\n  prod:\n    address: ray://h:10001\n    auth_token_file: /t\n"
        "  dev: {address: 'h:6379', namespace: dev}\n"
    )
    assert clusters_file(settings) == [
        RayClusterConfig("prod", "ray://h:10001", Path("/t")),
        RayClusterConfig("dev", "h:6379", None, "dev"),
    ]
    settings.write_text("clusters:\n  prod: {address: x, token: y}\n")
    with pytest.raises(ValueError, match=r"unknown field\(s\) token"):
        clusters_file(settings)


# -- the provider over a scripted link -------------------------------------------------------


class ScriptedLink:
    def __init__(self) -> None:
        self.problem = ""
        self.sent: list[dict[str, Any]] = []
        self.started = False

    def start(self) -> None:
        self.started = True

    def send(self, command: dict[str, Any]) -> None:
        self.sent.append(command)

    def close(self, grace: float) -> None:
        self.sent.append({"op": "exit", "grace": grace})

    def ops(self, op: str) -> list[dict[str, Any]]:
        return [c for c in self.sent if c["op"] == op]


class Rig:
    def __init__(self, tmp_path: Path, installed: bool = True) -> None:
        self.link = ScriptedLink()
        self.tmp_path = tmp_path
        self.provider = RayProvider(
            [RayClusterConfig("lab", "ray://127.0.0.1:10001")],
            tmp_path,
            link_factory=self.factory,
            installed=installed,
        )

    def factory(self, config: RayClusterConfig, on_event: Any) -> ScriptedLink:
        self.on_event = on_event
        return self.link

    def report(self, *nodes: RayNode, config: Any = None) -> None:
        self.on_event({"event": "config", "config": config})
        self.on_event(
            {
                "event": "nodes",
                "nodes": [
                    {
                        "id": n.id,
                        "alive": n.alive,
                        "address": n.address,
                        "labels": dict(n.labels),
                        "resources": dict(n.resources),
                    }
                    for n in nodes
                ],
            }
        )

    def launch(
        self,
        replica_id: str,
        instance_id: str,
        accelerators: int = 0,
        accelerator_memory_bytes: int = 0,
        packing: bool = True,
    ) -> ReplicaLaunch:
        """A replica with the GPU need its deployment (``packing``) gives it."""
        bundle = ReplicaBundle(
            server="127.0.0.1:7600",
            package=self.tmp_path / "p.tar.gz",
            package_digest="d" * 64,
            env_key="k",
            python_version="3.11",
            commands=(("{uv}", "venv", "{env}"),),
            runtime=self.tmp_path / "runtime" / "v1",
            args=("--runner-id", "r1"),
        )
        return ReplicaLaunch(
            replica_id,
            instance_id,
            ("python",),
            {"SECRET": "not for Ray"},
            GIB // 2,
            self.tmp_path / "logs" / f"{replica_id}.log",
            gpus=GpuNeed.of(accelerators, accelerator_memory_bytes, packing),
            cpus=1.0,
            bundle=bundle,
            token="token",
        )


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    rig = Rig(tmp_path)
    rig.provider.set_nodepools([pool("pa", "a", maximum=2)])
    assert rig.link.started
    rig.report(node("n1", "a"), node("n2", "b"))
    return rig


def test_without_ray_installed_a_ray_cluster_is_refused_with_the_fix(tmp_path: Path) -> None:
    provider = RayProvider([RayClusterConfig("lab", "x")], tmp_path, installed=False)
    assert provider.check_region("lab") == INSTALL
    assert "pip install 'orchard[ray]'" in INSTALL


def test_an_unknown_region_names_the_server_option(rig: Rig) -> None:
    problem = rig.provider.check_region("prod")
    assert "'prod' is not a Ray cluster this server knows (it knows: lab)" in problem
    assert "orchard serve --ray-cluster prod=ray://HEAD:10001" in problem


def test_instance_types_are_the_node_groups(rig: Rig) -> None:
    types = {t.id: t for t in rig.provider.instance_types("lab")}
    assert set(types) == {"a", "b"} and types["a"].shape == ComputeShape(2, 2 * GIB)
    assert rig.provider.check_instance_type("lab", "a", ComputeShape(2, GIB)) == []
    [(field, why)] = rig.provider.check_instance_type("lab", "c", ComputeShape(1, GIB))
    assert (
        field == "id" and "'c' is not a node group of Ray cluster 'lab' (its groups: a, b)" in why
    )


def test_an_instance_is_a_node_of_the_group_held_by_one_pool(rig: Rig) -> None:
    instance = rig.provider.start_instance("u/cc/pa", ComputeShape(2, GIB))
    assert instance.id == "ray-lab-n1" and "group a" in instance.where
    with pytest.raises(NoCapacity, match=r"all 1 live node.*no autoscaler; start another node"):
        rig.provider.start_instance("u/cc/pa", ComputeShape(2, GIB))
    rig.provider.stop_instance(instance.id)
    rig.provider.stop_instance(instance.id)  # idempotent
    assert rig.provider.start_instance("u/cc/pa", ComputeShape(2, GIB)).id == "ray-lab-n1"


def test_with_an_autoscaler_a_missing_node_is_asked_for(rig: Rig) -> None:
    rig.report(node("n1", "a"), config={"groups": [{"name": "a", "resources": {"CPU": 2}}]})
    rig.provider.start_instance("u/cc/pa", ComputeShape(2, GIB))
    with pytest.raises(NoCapacity, match="asked the Ray autoscaler for another"):
        rig.provider.start_instance("u/cc/pa", ComputeShape(2, GIB))
    assert len(rig.link.ops("demand")[-1]["bundles"]) == 2


def test_a_replica_is_an_actor_on_its_instance_node(rig: Rig) -> None:
    instance = rig.provider.start_instance("u/cc/pa", ComputeShape(2, GIB))
    rig.provider.start_replica(rig.launch("r1", instance.id))
    [start] = rig.link.ops("start")
    assert start["node"] == "n1" and start["selector"] == {"orchard.nodepool": "a"}
    assert start["resources"] == {"num_cpus": 1.0, "num_gpus": 0, "memory": GIB // 2}
    assert start["spec"]["token"] == "token" and "SECRET" not in json.dumps(start)
    assert start["spec"]["server"] == "127.0.0.1:7600" and start["spec"]["runtime_version"] == "v1"
    assert [s.running for s in rig.provider.poll()] == [True]
    rig.on_event({"event": "output", "id": "r1", "text": "loading\n"})
    rig.on_event({"event": "ended", "id": "r1", "code": 1, "reason": ""})
    [status] = rig.provider.poll()
    assert (status.running, status.exit_code) == (False, 1)
    assert rig.provider.poll() == []  # forgotten once reported
    assert (rig.tmp_path / "logs" / "r1.log").read_text() == "loading\n"


def test_replicas_that_state_gpu_memory_share_a_gpu_of_their_node(rig: Rig) -> None:
    shape = ComputeShape(2, GIB, num_accelerators=1, accelerator_memory_bytes=80 * GIB)
    instance = rig.provider.start_instance("u/cc/pa", shape)
    for replica_id in ("r1", "r2"):
        rig.provider.start_replica(
            rig.launch(replica_id, instance.id, accelerators=1, accelerator_memory_bytes=40 * GIB)
        )
    assert [start["resources"]["num_gpus"] for start in rig.link.ops("start")] == [0.5, 0.5]
    assert rig.provider.devices(instance.id) == (Device(0, 80 * GIB, 80 * GIB, sharers=2),)
    with pytest.raises(NoCapacity) as refused:
        rig.provider.start_replica(
            rig.launch("r3", instance.id, accelerators=1, accelerator_memory_bytes=40 * GIB)
        )
    assert str(refused.value) == (
        f"instance {instance.id}: 1 GPU with 40 GiB free requested; GPU 0 has 0 B free "
        "(shared by 2 replicas); it fits once replicas on these GPUs end, or on another instance"
    )
    assert len(rig.link.ops("start")) == 2  # Ray was not asked
    rig.on_event({"event": "ended", "id": "r1", "code": 0, "reason": ""})
    rig.provider.start_replica(  # r1's share is free again
        rig.launch("r3", instance.id, accelerators=1, accelerator_memory_bytes=40 * GIB)
    )
    with pytest.raises(NoCapacity, match=r"1 whole GPU requested; GPU 0 has 0 B free \(shared"):
        rig.provider.start_replica(rig.launch("r4", instance.id, accelerators=1))
    assert [start["resources"]["num_gpus"] for start in rig.link.ops("start")] == [0.5] * 3


def test_a_replica_whose_deployment_disables_packing_asks_ray_for_whole_gpus(rig: Rig) -> None:
    shape = ComputeShape(2, GIB, num_accelerators=1, accelerator_memory_bytes=80 * GIB)
    instance = rig.provider.start_instance("u/cc/pa", shape)
    rig.provider.start_replica(
        rig.launch(
            "r1", instance.id, accelerators=1, accelerator_memory_bytes=40 * GIB, packing=False
        )
    )
    [start] = rig.link.ops("start")
    assert start["resources"]["num_gpus"] == 1
    assert rig.provider.devices(instance.id) == (Device(0, 80 * GIB, held=True),)
    with pytest.raises(NoCapacity, match=r"1 GPU with 40 GiB free requested; GPU 0 is held whole"):
        rig.provider.start_replica(
            rig.launch("r2", instance.id, accelerators=1, accelerator_memory_bytes=40 * GIB)
        )
    assert len(rig.link.ops("start")) == 1  # Ray was not asked


@pytest.mark.parametrize(
    ("need", "device_gib", "held", "num_gpus"),
    [
        (GpuNeed.of(1, 40 * GIB), 80, GpuNeed(1, 40 * GIB, shared=True), 0.5),
        (GpuNeed.of(1, 40 * GIB, packing=False), 80, GpuNeed(1, 40 * GIB), 1),
        (GpuNeed.of(2, 40 * GIB, packing=False), 80, GpuNeed(2, 40 * GIB), 2),
        (GpuNeed.of(1, 40 * GIB), 0, GpuNeed(1, 40 * GIB), 1),  # the GPU's memory is unknown
        (GpuNeed(), 80, GpuNeed(), 0),
    ],
)
def test_only_a_shared_need_asks_ray_for_a_fraction_of_a_gpu(
    need: GpuNeed, device_gib: int, held: GpuNeed, num_gpus: float
) -> None:
    assert ray_gpus(need, device_gib * GIB) == (held, num_gpus)


def test_stopping_is_idempotent_and_survives_a_new_driver(rig: Rig) -> None:
    instance = rig.provider.start_instance("u/cc/pa", ComputeShape(2, GIB))
    rig.provider.start_replica(rig.launch("r1", instance.id))
    rig.provider.stop_replica("r1", 5.0)
    rig.provider.stop_replica("r1", 5.0)
    rig.provider.stop_replica("unknown", 5.0)
    assert rig.link.ops("stop") == [{"op": "stop", "id": "r1", "grace": 5.0}]
    rig.on_event({"event": "spawned"})  # the driver was started again: adopt, then stop again
    assert rig.link.sent[-2:] == [
        {"op": "adopt", "ids": ["r1"]},
        {"op": "stop", "id": "r1", "grace": 5.0},
    ]


def test_a_dead_node_loses_its_instance_and_an_unreachable_cluster_is_a_problem(
    rig: Rig,
) -> None:
    instance = rig.provider.start_instance("u/cc/pa", ComputeShape(2, GIB))
    rig.report(node("n1", "a", alive=False), node("n2", "b"))
    [(lost, why)] = rig.provider.lost_instances()
    assert lost == instance.id and "Ray node n1 of group a is gone" in why
    assert rig.provider.lost_instances() == []
    rig.link.problem = "the Ray cluster 'lab' at ray://... is not reachable: no answer for 10 s"
    assert rig.provider.problem(pool("pa", "a")) == rig.link.problem
    with pytest.raises(NoCapacity, match="not reachable"):
        rig.provider.start_instance("u/cc/pa", ComputeShape(2, GIB))


def test_missing_nodes_without_an_autoscaler_are_the_pool_status(rig: Rig) -> None:
    assert rig.provider.problem(pool("pa", "a", minimum=1)) == ""
    problem = rig.provider.problem(pool("pa", "a", minimum=2))
    assert "wants 2 node(s) of Ray group 'a' but the Ray cluster 'lab' has 1" in problem
    assert "ray start --address=... --labels orchard.nodepool=a" in problem


# -- the server's refusals ---------------------------------------------------------------------


def test_orchard_serve_refuses_a_malformed_ray_cluster(tmp_path: Path) -> None:
    answer = CliRunner().invoke(
        cli, ["serve", "--home", str(tmp_path), "--ray-cluster", "ray://h:10001"]
    )
    assert answer.exit_code != 0
    assert "is not NAME=ADDRESS, e.g. prod=ray://10.0.0.5:10001" in answer.output


def test_the_server_refuses_a_ray_cluster_it_cannot_use(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(ray_provider, "ray_installed", lambda: False)
    with ServerThread(tmp_path / "without") as server:
        answer = _post_cluster(server, region="lab")
    assert answer.status.code == sc.COMPUTE_CLUSTER_INVALID_ARGUMENT
    assert "pip install 'orchard[ray]'" in answer.status.description
    monkeypatch.setattr(ray_provider, "ray_installed", lambda: True)
    with ServerThread(tmp_path / "with") as server:
        answer = _post_cluster(server, region="lab")
    assert "orchard serve --ray-cluster lab=ray://HEAD:10001" in answer.status.description


def _post_cluster(server: ServerThread, region: str) -> Any:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        api = Api(channel, server.pat, server.user_id)
        return api.call(
            "PostComputeClusters",
            compute_clusters=[cluster("rc", cloud_provider={"id": "ray"}, region=region)],
        )


# -- end to end ----------------------------------------------------------------------------


def _isolation_problem() -> str:
    if not ray_provider.ray_installed():
        return "Ray is not installed (pip install 'orchard[ray]'; scripts/setup.sh does)"
    if not shutil.which("unshare") or not shutil.which("ip"):
        return "needs unshare and ip to give Ray a loopback-only network namespace"
    probe = subprocess.run(
        ["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True, timeout=30
    )
    if probe.returncode != 0:
        return f"cannot make a network namespace here: {probe.stderr.decode()[-300:]}"
    return ""


def _netns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def _kill_namespace(namespace: str) -> list[int]:
    """Kill every process left in ``namespace``, by id; those that survive."""
    left = [p for p in psutil.process_iter() if _netns(p.pid) == namespace]
    for proc in left:
        proc.kill()
    _, alive = psutil.wait_procs(left, timeout=30)
    return [p.pid for p in alive]


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_a_deployment_on_a_real_ray_cluster(tmp_path: Path) -> None:
    """Real processes are the point: Ray's head and two worker nodes (``ray start``), the
    server's Ray driver, the replica actors and the runners they start, a node killed by pid.
    They run in a network namespace whose only interface is loopback, because Ray binds some
    listeners to every interface even when told 127.0.0.1; every process of that namespace is
    stopped by id at the end, and the test fails if one survives."""
    problem = _isolation_problem()
    if problem:
        pytest.skip(problem)
    temp = Path(tempfile.mkdtemp(prefix="orchard-ray-", dir="/tmp"))  # short socket paths
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(temp / "ray-token"),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    own = _netns(os.getpid())
    command = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"']
    command += [sys.executable, "-m", "tests.ray_scenario", "--temp", str(temp)]
    with open(tmp_path / "out", "w+b") as out, open(tmp_path / "err", "w+b") as err:
        child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=err)
        namespace = None
        try:
            while namespace is None and child.poll() is None:
                current = _netns(child.pid)
                namespace = current if current not in (None, own) else None
            child.wait(timeout=840)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            survivors = _kill_namespace(namespace) if namespace else []
            shutil.rmtree(temp, ignore_errors=True)
        out.seek(0)
        err.seek(0)
        lines = out.read().decode(errors="replace").strip().splitlines()
        stderr = err.read().decode(errors="replace")
    assert lines, stderr[-4000:]
    report = json.loads(lines[-1])
    assert "error" not in report, report["error"] + stderr[-3000:]
    assert survivors == [] and report["survivors"] == []
    assert report["regions"] == ["lab"]
    assert report["instance_types"] == {"a": ["2", "2Gi"], "b": ["2", "2Gi"]}
    assert "64 CPUs requested but a node of Ray group 'a' has 2" in report["too_big_refused"]
    statuses = report["statuses"]
    assert statuses["pa"] == statuses["pb"] == ""  # READY
    assert "wants 2 node(s) of Ray group 'b' but the Ray cluster 'lab' has 1" in statuses["pmin"]
    assert sorted(report["placed"]) == ["a", "b"]
    assert report["shapes"] == {
        "predict": "hello",
        "generate": ["to", "be", "sent"],  # one item per word
        "stream": ["one", "two"],
    }
    assert "is not reachable" in report["unreachable"]["status"]
    assert report["unreachable"]["served_meanwhile"] == "still"
    restart = report["driver_restart"]
    assert restart["drivers_killed"] == 1 and "its driver exited" in restart["status"]
    assert restart["served_meanwhile"] == "still" and restart["same_actors"]
    death = report["node_death"]
    assert death["placed"] == ["a", "a"] and death["calls_failed"] == 0, death
    assert report["actors_after_delete"] == []
