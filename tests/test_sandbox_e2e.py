"""A hostile tenant, end to end: its model tries everything a tenant's code could try against
the server and another tenant, and finds nothing.

These are e2e tests because what is tested is the boundary around real replica processes:
two users of one orchestrating server, each with a deployment whose replicas the server starts
in its sandbox (bubblewrap; as root, each tenant under a uid of its own). The victim serves the
echo example; the attacker serves ``Hostile`` (below), whose ``predict`` takes a plan of attack
as JSON and answers what it found. The server's environment holds the bootstrap PAT, as an
operator's often does.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from clarifai_grpc.grpc.api import resources_pb2 as r
from clarifai_grpc.grpc.api import service_pb2

from orchard.client.uploads import upload_model
from orchard.providers import sandbox
from orchard.providers.sandbox import INHERITED, THREAD_COUNTS, SandboxUnavailable
from orchard.testing import ServerThread
from tests.conftest import Api
from tests.resources import EXAMPLES, make_cluster, make_nodepool, ok
from tests.waiting import wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="bubblewrap is Linux's"),
]

HOSTILE_MODEL = '''
import asyncio
import gc
import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from orchard.authoring import ModelClass


def attempt(action):
    try:
        return "ok: " + str(action())[:200]
    except Exception as exc:
        return f"refused: {type(exc).__name__}: {exc}"[:200]


def processes():
    seen = {}
    for pid in sorted(p for p in os.listdir("/proc") if p.isdigit()):
        seen[pid] = {
            "cmdline": attempt(lambda: Path(f"/proc/{pid}/cmdline").read_bytes().decode()),
            "environ": attempt(lambda: Path(f"/proc/{pid}/environ").read_bytes().decode()),
        }
    return seen


def write(path):
    Path(path).write_text("pwned")
    return path


def own_token():
    """A model's code shares its replica's process: it can find the replica's own token."""
    for thing in gc.get_objects():
        if type(thing).__name__ == "RunnerSettings":
            return thing.pat
    return ""


async def attach(address, token, runner_id):
    """Open the work stream for another tenant's runner with this replica's own token."""
    from orchard import work_protocol
    from orchard.runners import link

    call = await link.LinkCall.open(address, token)
    try:
        hello = work_protocol.Hello(runner_id, "np", "cc", "thief", 1)
        await call.write(work_protocol.hello(hello))
        message = await asyncio.wait_for(call.read(), 10)
        return work_protocol.refusal(message) or "not refused"
    finally:
        await call.close()


class Hostile(ModelClass):
    @ModelClass.method
    def predict(self, text: str) -> str:
        plan = json.loads(text)
        address = sys.argv[sys.argv.index("--server") + 1]
        return json.dumps(
            {
                "environ": dict(os.environ),
                "uid": os.getuid(),
                "processes": processes(),
                "reads": {p: attempt(lambda: Path(p).read_bytes()[:40]) for p in plan["read"]},
                "lists": {p: attempt(lambda: os.listdir(p)) for p in plan["list"]},
                "writes": {p: attempt(lambda: write(p)) for p in plan["write"]},
                "kill": attempt(lambda: os.kill(plan["server_pid"], 0)),
                "connect": attempt(
                    lambda: socket.create_connection(("127.0.0.1", plan["port"]), 5).close()
                ),
                "attach": attempt(
                    lambda: asyncio.run(attach(address, own_token(), plan["victim_runner"]))
                ),
            }
        )

    @ModelClass.method
    def generate(self, text: str) -> Iterator[str]:
        yield from text.split()

    @ModelClass.method
    def stream(self, input_iterator: Iterator[str]) -> Iterator[str]:
        for text in input_iterator:
            yield text.upper()
'''


def hostile_package(root: Path) -> Path:
    (root / "1").mkdir(parents=True)
    (root / "1" / "model.py").write_text(textwrap.dedent(HOSTILE_MODEL))
    (root / "requirements.txt").write_text("")
    (root / "config.yaml").write_text(
        textwrap.dedent(
            """
            model:
              id: hostile
              app_id: apps
              model_type_id: text-to-text
            build_info:
              python_version: "3.11"
            inference_compute_info:
              cpu_limit: "0.5"
              cpu_memory: 500Mi
            num_threads: 2
            """
        )
    )
    return root


class Tenant:
    """One user of the server, with a cluster, a nodepool and a deployment of one model."""

    def __init__(self, server: ServerThread, channel: grpc.Channel, user_id: str, pat: str):
        self.server, self.user_id, self.pat = server, user_id, pat
        self.api = Api(channel, pat, user_id)

    def deploy(self, folder: Path, model_id: str, app_id: str, **nodepool: Any) -> str:
        make_cluster(self.api)
        make_nodepool(self.api, max_instances=1, **nodepool)
        version = upload_model(
            folder, user_id=self.user_id, base_url=self.server.base_url, pat=self.pat
        )
        deployment = r.Deployment(
            id=f"{model_id}-dep",
            worker=r.Worker(
                model=r.Model(
                    id=model_id, app_id=app_id, model_version=r.ModelVersion(id=version.id)
                )
            ),
            nodepools=[r.Nodepool(id="np", compute_cluster=r.ComputeCluster(id="cc"))],
            scheduling_choice=4,
            autoscale_config=r.AutoscaleConfig(min_replicas=1, max_replicas=1),
        )
        ok(self.api.call("PostDeployments", deployments=[deployment]))
        return version.id

    def live(self, deployment_id: str) -> int:
        got = self.api.call(
            "GetDeployment",
            user_app_id=r.UserAppIDSet(user_id=self.user_id),
            deployment_id=deployment_id,
        )
        return int(got.deployment.deployment_metrics.live_replicas)

    def events(self, model_id: str, app_id: str, version_id: str) -> str:
        response = self.api.call(
            "ListLogEntries",
            user_app_id=r.UserAppIDSet(user_id=self.user_id, app_id=app_id),
            model_id=model_id,
            model_version_id=version_id,
            log_type="runner.events",
        )
        return "\n".join(entry.message for entry in response.log_entries)

    def runner_id(self) -> str:
        return str(self.api.call("ListRunners").runners[0].id)

    def request(self, model_id: str, app_id: str, text: str) -> Any:
        return service_pb2.PostModelOutputsRequest(
            user_app_id=r.UserAppIDSet(user_id=self.user_id, app_id=app_id),
            model_id=model_id,
            inputs=[r.Input(data=r.Data(text=r.Text(raw=text)))],
            runner_selector=r.RunnerSelector(
                deployment=r.Deployment(id=f"{model_id}-dep", user_id=self.user_id)
            ),
        )


@dataclass
class Attack:
    """Two tenants of one server, and what the attacker's model found."""

    server: ServerThread
    victim: Tenant
    attacker: Tenant
    found: dict[str, Any]


@pytest.fixture(scope="module")
def attack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Attack]:
    tmp = tmp_path_factory.mktemp("tenants")
    server = ServerThread(tmp / "home", offline=True, orchestrate=True, drain_seconds=2.0)
    # The operator's environment holds the admin's PAT; replicas must not inherit it.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ORCHARD_BOOTSTRAP_PAT", server.pat)
        yield from _tenants(server, tmp)


def _tenants(server: ServerThread, tmp: Path) -> Iterator[Attack]:
    with server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        try:
            victim = Tenant(server, channel, server.user_id, server.pat)
            attacker = Tenant(server, channel, "mallory", server.create_user("mallory"))
            victim.deploy(EXAMPLES / "echo", "echo", "examples")
            attacker.deploy(hostile_package(tmp / "hostile"), "hostile", "apps")
            wait_for(lambda: victim.live("echo-dep") == 1, timeout=90, what="the echo replica")
            wait_for(lambda: attacker.live("hostile-dep") == 1, timeout=90, what="hostile")
            yield Attack(server, victim, attacker, _attack(server, victim, attacker))
        finally:
            channel.close()


def _attack(server: ServerThread, victim: Tenant, attacker: Tenant) -> dict[str, Any]:
    """What the hostile model found, sent its plan of attack."""
    home = server.settings.home
    packages = sorted((home / "packages" / "unpacked").iterdir())
    envs = sorted(p for p in (home / "envs").iterdir() if p.is_dir())
    plan = {
        "read": [
            str(home / "orchard.db"),
            str(server.settings.pat_file),
            *(str(p / "config.yaml") for p in packages),  # its own package is readable
            *(str(p / "pyvenv.cfg") for p in envs),
            "/etc/shadow",
        ],
        "list": [
            str(home),
            str(home / "packages"),
            str(home / "logs"),
            str(home / "envs"),
            str(home / "sandboxes"),
        ],
        "write": [
            str(home / "pwned"),
            *(str(p / "pwned") for p in packages),
            *(str(p / "pwned") for p in envs),
            "/usr/pwned",
            "/etc/pwned",
            "/tmp/mine",  # its own /tmp: allowed
        ],
        "server_pid": os.getpid(),
        "port": server.port,
        "victim_runner": victim.runner_id(),
    }
    request = attacker.request("hostile", "apps", json.dumps(plan))
    answer = ok(attacker.api.call("PostModelOutputs", request))
    return dict(json.loads(answer.outputs[0].data.text.raw))


def test_its_environment_is_the_allowlist_and_no_secret_is_anywhere_it_looked(
    attack: Attack,
) -> None:
    found, server = attack.found, attack.server
    allowed = {"PATH", "HOME", "TMPDIR", "PYTHONUNBUFFERED", "CUDA_VISIBLE_DEVICES", "PWD"}
    assert set(found["environ"]) <= allowed | set(INHERITED) | THREAD_COUNTS, found["environ"]
    everything = json.dumps(found)
    assert server.pat not in everything and "ORCHARD_BOOTSTRAP_PAT" not in everything
    assert server.server is not None
    for token in server.server.runtime.replica_tokens:  # no replica's token either
        assert token not in everything


def test_it_sees_its_own_sandbox_processes_only(attack: Attack) -> None:
    found = attack.found
    assert 1 <= len(found["processes"]) <= 3, found["processes"]
    seen = json.dumps(found["processes"])
    assert attack.victim.runner_id() not in seen and "echo" not in seen
    assert found["kill"].startswith("refused: ProcessLookupError")  # the server is not there


def test_it_reads_nothing_of_the_server_or_the_other_tenant(attack: Attack) -> None:
    home, reads = attack.server.settings.home, attack.found["reads"]
    for path in (home / "orchard.db", attack.server.settings.pat_file, Path("/etc/shadow")):
        assert reads[str(path)].startswith("refused"), path
    readable = [p for p, answer in reads.items() if answer.startswith("ok")]
    assert len(readable) == 2, readable  # its own package's config and its own environment
    assert any("hostile" in reads[p] for p in readable)
    lists = attack.found["lists"]
    # Of the home it sees only the folders its own mounts sit in, each holding only its own.
    for name in ("orchard.db", "admin.pat", "logs", "blobs"):
        assert name not in lists[str(home)] + lists[str(home / "packages")]
    assert lists[str(home / "logs")].startswith("refused")
    assert lists[str(home / "envs")].count("'") == 2  # one entry: its own environment
    assert lists[str(home / "sandboxes")].count("'") == 2  # its own private folder


def test_it_writes_only_to_its_own_private_folders(attack: Attack) -> None:
    writes = dict(attack.found["writes"])
    assert writes.pop("/tmp/mine").startswith("ok")
    assert all(answer.startswith("refused") for answer in writes.values()), writes
    assert not (attack.server.settings.home / "pwned").exists()


def test_its_own_token_opens_no_other_tenants_work_stream(attack: Attack) -> None:
    answer = attack.found["attach"]
    assert "not found" in answer or "not accessible" in answer, answer


def test_it_runs_as_its_tenants_uid_with_the_default_egress(attack: Attack) -> None:
    if os.geteuid() == 0:
        assert attack.found["uid"] != 0
    # With egress (the default), it shares the host's network: the server's public port too.
    assert attack.found["connect"].startswith("ok"), attack.found["connect"]


def test_the_hostile_deployment_still_serves_all_three_shapes(attack: Attack) -> None:
    attacker, victim = attack.attacker, attack.victim
    request = attacker.request("hostile", "apps", "a b c")
    generate = server_stream(attacker, "GenerateModelOutputs", request)
    assert [o.outputs[0].data.text.raw for o in generate] == ["a", "b", "c"]
    streamed = server_stream(attacker, "StreamModelOutputs", iter([request]))
    assert [o.outputs[0].data.text.raw for o in streamed] == ["A B C"]
    echoed = ok(victim.api.call("PostModelOutputs", victim.request("echo", "examples", "hi")))
    assert echoed.outputs[0].data.text.raw == "hi"


def server_stream(tenant: Tenant, method: str, request: Any) -> list[Any]:
    from orchard import wire

    call = wire.callable_for(tenant.api.channel, method)
    metadata = (("authorization", f"Key {tenant.pat}"),)
    return [ok(response) for response in call(request, metadata=metadata, timeout=60)]


@pytest.mark.parametrize("mode", ["auto", "none"])
def test_a_server_with_two_users_and_no_sandbox_starts_no_replica_unless_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    def missing() -> None:
        raise SandboxUnavailable("bubblewrap is not installed")

    monkeypatch.setattr(sandbox, "_bubblewrap", missing)  # a host without bubblewrap
    with ServerThread(tmp_path / "home", offline=True, orchestrate=True, sandbox=mode) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        try:
            server.create_user("mallory")
            admin = Tenant(server, channel, server.user_id, server.pat)
            version = admin.deploy(EXAMPLES / "echo", "echo", "examples")
            if mode == "none":  # the operator said so: replicas start, unsandboxed
                wait_for(lambda: admin.live("echo-dep") == 1, timeout=90, what="a replica")
                return
            wait_for(
                lambda: "starts none" in admin.events("echo", "examples", version),
                timeout=60,
                what="the refusal in the deployment's events",
            )
            events = admin.events("echo", "examples", version)
            assert "install bubblewrap" in events and "--sandbox none" in events
            assert admin.live("echo-dep") == 0
        finally:
            channel.close()


def test_a_nodepool_without_egress_gives_its_replicas_no_network_but_their_link(
    tmp_path: Path,
) -> None:
    with ServerThread(tmp_path / "home", offline=True, orchestrate=True) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        try:
            tenant = Tenant(server, channel, server.user_id, server.pat)
            package = hostile_package(tmp_path / "hostile")
            tenant.deploy(package, "hostile", "apps", metadata={"egress": "none"})
            wait_for(lambda: tenant.live("hostile-dep") == 1, timeout=90, what="the replica")
            plan = {"read": [], "list": [], "write": [], "server_pid": 1, "port": server.port}
            plan["victim_runner"] = "none"
            request = tenant.request("hostile", "apps", json.dumps(plan))
            answer = ok(tenant.api.call("PostModelOutputs", request))
            found = json.loads(answer.outputs[0].data.text.raw)
            # its own loopback, where nothing listens: the host's port is not there
            assert found["connect"].startswith("refused: ConnectionRefusedError"), found["connect"]
        finally:
            channel.close()
