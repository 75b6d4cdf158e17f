"""Orchestration end to end: a server that starts, scales, replaces and stops replicas itself.

These are e2e tests: each needs real replica processes (started by the server's local
provider in a model's built environment) because what is tested is the life of those
processes: that they start on demand, serve, are replaced after ``kill -9``, drain when the
load goes, and that none outlives its deployment or the server.

The test model ``gate`` holds each prediction until a file (named by the input) exists, so a
test decides exactly how long items stay in flight without timing anything.
"""

from __future__ import annotations

import os
import signal
import textwrap
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest
import yaml
from clarifai_grpc.grpc.api import resources_pb2 as r
from clarifai_grpc.grpc.api import service_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2 as sc
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from orchard.cli.main import cli
from orchard.client.uploads import upload_model
from orchard.configs import DeploymentSpec
from orchard.services import deployments as deployment_service
from orchard.services import models as model_service
from orchard.testing import ServerThread
from tests.conftest import Api
from tests.resources import make_cluster, make_nodepool, ok
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

GATE_MODEL = '''
import time
from pathlib import Path

from orchard.authoring import ModelClass


class Gate(ModelClass):
    def load_model(self):
        if Path(__file__).with_name("broken").exists():
            raise RuntimeError("the weights file is missing")

    @ModelClass.method
    def predict(self, text: str) -> str:
        """Hold until the file named by ``text`` exists ("now" answers at once)."""
        while text != "now" and not Path(text).exists():
            time.sleep(0.01)
        print(f"answered {text}", flush=True)
        return "open"
'''


def gate_package(root: Path, *, broken: bool = False, threads: int = 1) -> Path:
    root.mkdir(parents=True)
    (root / "1").mkdir()
    (root / "1" / "model.py").write_text(textwrap.dedent(GATE_MODEL))
    if broken:
        (root / "1" / "broken").write_text("")
    (root / "requirements.txt").write_text("")
    (root / "config.yaml").write_text(
        textwrap.dedent(
            f"""
            model:
              id: gate
              app_id: tests
              model_type_id: text-to-text
            build_info:
              python_version: "3.11"
            inference_compute_info:
              cpu_limit: "0.1"
              cpu_memory: 300Mi
            num_threads: {threads}
            """
        )
    )
    return root


@pytest.fixture
def gates(tmp_path: Path) -> Path:
    """Where tests open the gates: the one host folder the (sandboxed) replicas may read."""
    folder = tmp_path / "gates"
    folder.mkdir()
    return folder


@pytest.fixture
def orchestrating(tmp_path: Path, gates: Path) -> Iterator[ServerThread]:
    with ServerThread(
        tmp_path / "home",
        offline=True,
        orchestrate=True,
        drain_seconds=5.0,
        http_port=0,
        replica_mounts=[gates],
    ) as running:
        yield running


class Stack:
    """An orchestrating server with cluster cc, nodepool np and the gate model uploaded."""

    def __init__(self, server: ServerThread, api: Any, version_id: str) -> None:
        self.server, self.api, self.version_id = server, api, version_id

    def deploy(self, dep_id: str = "gate-dep", nodepool: str = "np", **autoscale: int) -> None:
        config = {"min_replicas": 0, "max_replicas": 2} | autoscale
        ok(
            self.api.call(
                "PostDeployments",
                deployments=[
                    r.Deployment(
                        id=dep_id,
                        worker=r.Worker(
                            model=r.Model(
                                id="gate",
                                app_id="tests",
                                model_version=r.ModelVersion(id=self.version_id),
                            )
                        ),
                        nodepools=[
                            r.Nodepool(id=nodepool, compute_cluster=r.ComputeCluster(id="cc"))
                        ],
                        scheduling_choice=4,
                        autoscale_config=r.AutoscaleConfig(**config),
                    )
                ],
            )
        )

    def predict(self, text: str = "now", dep_id: str = "gate-dep") -> Any:
        request = service_pb2.PostModelOutputsRequest(
            user_app_id=r.UserAppIDSet(user_id=self.server.user_id, app_id="tests"),
            model_id="gate",
            inputs=[r.Input(data=r.Data(text=r.Text(raw=text)))],
            runner_selector=r.RunnerSelector(
                deployment=r.Deployment(id=dep_id, user_id=self.server.user_id)
            ),
        )
        return self.api.call("PostModelOutputs", request)

    def replicas(self) -> list[psutil.Process]:
        """This server's replica processes (it runs in a thread of this process, beside other
        tests' servers), not their sandboxes' processes: a replica's package is under the
        server's home."""
        home = str(self.server.settings.home)
        found = []
        for child in psutil.Process().children(recursive=True):
            try:
                command = " ".join(child.cmdline())
                if (
                    child.name() != "bwrap"
                    and "orchard.runners.serve" in command
                    and home in command
                ):
                    found.append(child)
            except psutil.Error:
                continue
        return found

    def live(self, dep_id: str = "gate-dep") -> int:
        dep = self.api.call(
            "GetDeployment",
            user_app_id=r.UserAppIDSet(user_id=self.server.user_id),
            deployment_id=dep_id,
        ).deployment
        return int(dep.deployment_metrics.live_replicas)

    def events(self) -> list[str]:
        response = self.api.call(
            "ListLogEntries",
            user_app_id=r.UserAppIDSet(user_id=self.server.user_id, app_id="tests"),
            model_id="gate",
            model_version_id=self.version_id,
            log_type="runner.events",
            per_page=500,
        )
        return [entry.message for entry in response.log_entries]


def _stack(server: ServerThread, api: Any, package: Path) -> Stack:
    make_cluster(api)
    make_nodepool(api, max_instances=1)
    version = upload_model(
        package, user_id=server.user_id, base_url=server.base_url, pat=server.pat
    )
    return Stack(server, api, version.id)


@pytest.fixture
def stack(orchestrating: ServerThread, tmp_path: Path) -> Iterator[Stack]:
    channel = grpc.insecure_channel(f"127.0.0.1:{orchestrating.port}")
    api = Api(channel, orchestrating.pat, orchestrating.user_id)
    try:
        yield _stack(orchestrating, api, gate_package(tmp_path / "gate"))
    finally:
        channel.close()


def test_min_replicas_one_starts_a_replica_that_serves(stack: Stack) -> None:
    stack.deploy(min_replicas=1)
    wait_for(lambda: stack.live() == 1, timeout=60, what="one live replica")
    assert len(stack.replicas()) == 1
    assert ok(stack.predict()).outputs[0].data.text.raw == "open"
    events = "\n".join(stack.events())
    assert "connected and is ready" in events
    runner = stack.api.call(
        "ListRunners", user_app_id=r.UserAppIDSet(user_id=stack.server.user_id)
    ).runners[0]
    assert runner.num_replicas == 1 and runner.metadata["orchard.deployment"] == "gate-dep"
    pool = stack.api.call(
        "GetNodepool",
        user_app_id=r.UserAppIDSet(user_id=stack.server.user_id),
        compute_cluster_id="cc",
        nodepool_id="np",
    ).nodepool
    assert pool.node_count == 1


def test_the_cli_shows_replicas_events_and_logs(stack: Stack, tmp_path: Path) -> None:
    stack.deploy(min_replicas=1)
    wait_for(lambda: stack.live() == 1, timeout=60, what="one live replica")
    ok(stack.predict("now"))
    env = {
        "ORCHARD_API_BASE": stack.server.base_url,
        "ORCHARD_PAT": stack.server.pat,
        "ORCHARD_USER_ID": stack.server.user_id,
        "ORCHARD_CONFIG": str(tmp_path / "none"),
    }
    shown = CliRunner().invoke(cli, ["deployment", "get", "gate-dep"], env=env)
    assert shown.exit_code == 0, shown.output
    assert yaml.safe_load(shown.stdout)["deployment"]["deployment_metrics"]["live_replicas"] == 1
    assert "# replicas in cc/np: desired 1, live 1" in shown.stdout
    assert "connected and is ready" in shown.stdout
    # what the replica printed reaches the runner log within a round or two
    lines = wait_for(
        lambda: [
            line
            for line in CliRunner()
            .invoke(cli, ["deployment", "logs", "gate-dep", "--no-follow"], env=env)
            .stdout.splitlines()
            if "answered now" in line
        ],
        timeout=30,
        what="the replica's output in the runner log",
    )
    assert lines[0].startswith("[gate-dep-")
    events = CliRunner().invoke(
        cli, ["deployment", "logs", "gate-dep", "--log-type", "events", "--no-follow"], env=env
    )
    assert "starting replica gate-dep-" in events.stdout


def test_a_replica_token_opens_the_runner_stream_only(stack: Stack) -> None:
    stack.deploy(min_replicas=1)
    wait_for(lambda: stack.live() == 1, timeout=60, what="one live replica")
    server = stack.server.server
    assert server is not None
    (token,) = server.runtime.replica_tokens
    as_replica = stack.api.as_user(stack.server.user_id, token)
    for method in ("GetUser", "ListDeployments", "ListRunners"):
        assert as_replica.call(method).status.code == sc.CONN_KEY_INVALID, method


def test_metrics_count_calls_and_replicas(stack: Stack) -> None:
    stack.deploy(min_replicas=1)
    wait_for(lambda: stack.live() == 1, timeout=60, what="one live replica")
    ok(stack.predict())
    assert stack.server.server is not None
    url = f"http://127.0.0.1:{stack.server.server.http_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    calls = {"target": "deployment/admin/gate-dep", "method": "predict"}
    assert samples[("orchard_requests_total", _labels(calls, code="10000"))] == 1
    assert samples[("orchard_request_seconds_count", _labels(calls))] == 1
    live = _labels({"deployment": "admin/gate-dep"}, state="live")
    assert samples[("orchard_deployment_replicas", live)] == 1
    assert samples[("orchard_nodepool_instances", _labels({"nodepool": "admin/cc/np"}))] == 1


def _labels(base: dict[str, str], **more: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((base | more).items()))


def test_scale_from_zero_serves_32_concurrent_first_requests(stack: Stack) -> None:
    stack.deploy(min_replicas=0, max_replicas=1)
    assert stack.replicas() == []
    with ThreadPoolExecutor(32) as pool:
        codes = list(pool.map(lambda _: stack.predict().status.code, range(32)))
    assert codes == [sc.SUCCESS] * 32
    assert len(stack.replicas()) == 1


def test_load_scales_up_to_max_and_idleness_back_to_zero(stack: Stack, gates: Path) -> None:
    stack.deploy(
        min_replicas=0,
        max_replicas=3,
        traffic_history_seconds=1,
        scale_up_delay_seconds=1,
        scale_down_delay_seconds=1,
        scale_to_zero_delay_seconds=2,
    )
    gate = gates / "open"
    with ThreadPoolExecutor(6) as pool:
        calls = [pool.submit(stack.predict, str(gate)) for _ in range(6)]
        # one slot per replica: six held items need three replicas (max_replicas)
        wait_for(lambda: stack.live() == 3, timeout=90, what="three live replicas")
        assert len(stack.replicas()) == 3
        gate.write_text("")
        assert [ok(c.result(timeout=60)).outputs[0].data.text.raw for c in calls] == ["open"] * 6
    wait_for(lambda: not stack.replicas(), timeout=60, what="every replica gone after idling")
    events = "\n".join(stack.events())
    assert "→ 3" in events and "→ 0" in events


def test_kill_9_replica_is_replaced_and_its_unary_call_retried(stack: Stack, gates: Path) -> None:
    stack.deploy(min_replicas=1, max_replicas=1)
    wait_for(lambda: stack.live() == 1, timeout=60, what="one live replica")
    first = stack.replicas()[0]
    gate = gates / "open"
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(stack.predict, str(gate))
        wait_for(
            lambda: (
                stack.api.call(
                    "ListRunners", user_app_id=r.UserAppIDSet(user_id=stack.server.user_id)
                ).runners
            ),
            timeout=10,
            what="the runner",
        )
        # the item is on the replica once the replica has no free slot
        server = stack.server.server
        assert server is not None
        wait_for(
            lambda: any(s.items for s in server.dispatcher.replicas()),
            timeout=30,
            what="the item in flight",
        )
        os.kill(first.pid, signal.SIGKILL)
        wait_for(
            lambda: [p for p in stack.replicas() if p.pid != first.pid],
            timeout=60,
            what="a replacement replica",
        )
        gate.write_text("")
        assert ok(call.result(timeout=60)).outputs[0].data.text.raw == "open"
    assert "replacing it" in "\n".join(stack.events())


def test_deleting_the_deployment_or_cluster_stops_its_replicas(stack: Stack) -> None:
    make_nodepool(stack.api, id="np2", max_instances=1)
    stack.deploy("one", min_replicas=1)
    stack.deploy("two", "np2", min_replicas=1)
    wait_for(lambda: len(stack.replicas()) == 2, timeout=60, what="two replicas")
    ok(
        stack.api.call(
            "DeleteDeployments",
            user_app_id=r.UserAppIDSet(user_id=stack.server.user_id),
            ids=["one"],
        )
    )
    wait_for(lambda: len(stack.replicas()) == 1, timeout=60, what="deployment one's replica gone")
    ok(
        stack.api.call(
            "DeleteComputeClusters",
            user_app_id=r.UserAppIDSet(user_id=stack.server.user_id),
            ids=["cc"],
        )
    )
    wait_for(lambda: not stack.replicas(), timeout=60, what="every replica gone")
    runners = stack.api.call(
        "ListRunners", user_app_id=r.UserAppIDSet(user_id=stack.server.user_id)
    ).runners
    assert list(runners) == []


def test_stopping_the_server_leaves_no_replica(tmp_path: Path) -> None:
    server = ServerThread(tmp_path / "home", offline=True, orchestrate=True, drain_seconds=5.0)
    server.start()
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        stack = _stack(
            server, Api(channel, server.pat, server.user_id), gate_package(tmp_path / "g")
        )
        stack.deploy(min_replicas=2)
        wait_for(lambda: len(stack.replicas()) == 2, timeout=60, what="two replicas")
        pids = [p.pid for p in stack.replicas()]
        channel.close()
    finally:
        server.stop()
    assert [pid for pid in pids if psutil.pid_exists(pid) and _alive(pid)] == []


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_replica_that_cannot_start_backs_off_and_is_reported(
    orchestrating: ServerThread, tmp_path: Path
) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{orchestrating.port}")
    try:
        stack = _stack(
            orchestrating,
            Api(channel, orchestrating.pat, orchestrating.user_id),
            gate_package(tmp_path / "broken", broken=True),
        )
        stack.deploy(min_replicas=1)

        def failed_starts() -> list[str] | None:
            found = [e for e in stack.events() if "before it connected" in e]
            return found if len(found) >= 2 else None

        failures = wait_for(failed_starts, timeout=60, what="two failed starts reported")
        assert "failed start 1" in failures[0] and "next try in 1 s" in failures[0]
        assert "the weights file is missing" in failures[0]
        assert "failed start 2" in failures[1] and "next try in 2 s" in failures[1]
    finally:
        channel.close()


def test_a_deployment_that_cannot_run_stops_no_other(stack: Stack) -> None:
    """e2e because what broke was every other deployment: no replica of any of them started
    while one deployment's version had no package. This one is stored as it could be before
    such deployments were refused (a server that did not orchestrate, an older Orchard)."""
    assert stack.server.server is not None
    with stack.server.server.store.session() as session:
        owner = stack.server.user_id
        model = model_service.create_model(session, owner, "tests", "ghost", {})
        version = model_service.create_model_version(session, model, {}).id  # no upload
        spec = DeploymentSpec.model_validate(
            {
                "id": "ghost-dep",
                "worker": {"model": {"id": "ghost", "app_id": "tests"}},
                "nodepools": [{"id": "np", "compute_cluster": {"id": "cc"}}],
                "autoscale_config": {"min_replicas": 1, "max_replicas": 1},
            }
        )
        deployment_service.create_deployment(session, owner, spec)
    stack.deploy(min_replicas=1)
    wait_for(lambda: stack.live() == 1, timeout=60, what="a replica of the other deployment")
    assert ok(stack.predict()).outputs[0].data.text.raw == "open"
    ghost_events = stack.api.call(
        "ListLogEntries",
        user_app_id=r.UserAppIDSet(user_id=stack.server.user_id, app_id="tests"),
        model_id="ghost",
        model_version_id=version,
        log_type="runner.events",
    ).log_entries
    (event,) = [e.message for e in ghost_events if "upload" in e.message]  # said once
    assert f"version '{version}' of model 'ghost' was made without an upload" in event
    assert "`orchard model upload`" in event
