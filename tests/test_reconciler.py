"""The orchestrator's rounds with its edges replaced: a scripted provider, dispatcher and store
(the real ones are exercised end to end in test_orchestration.py). The clock is injected, so
backoff and grace periods are checked without waiting."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from orchard.configs import AutoscaleSpec
from orchard.ids import PoolKey, VersionRef
from orchard.orchestration.capacity import Capacity
from orchard.orchestration.observe import Started, observe
from orchard.orchestration.reconciler import Orchestrator
from orchard.orchestration.resources import NodepoolView, Resources
from orchard.orchestration.snapshot import DeploymentPlan, PoolPlan, VersionSource
from orchard.orchestration.world import OrchestratorSettings
from orchard.providers import ProviderRegistry
from orchard.providers.base import (
    ComputeShape,
    Instance,
    NoCapacity,
    NodepoolInfo,
    Provider,
    ReplicaLaunch,
    ReplicaStatus,
)
from orchard.providers.gpus import (
    Device,
    GpuNeed,
    SharesDevices,
    assign_devices,
    devices_of,
    take_devices,
)
from orchard.providers.sandbox import THREAD_COUNTS
from orchard.runners.serve import build_parser

GIB = 2**30
POOL = PoolKey("u", "cc", "np")


class ScriptedProvider(Provider):
    id = "local"
    name = "scripted"
    orchestrated = True

    def __init__(self) -> None:
        self.launched: list[ReplicaLaunch] = []
        self.stopped: list[str] = []
        self.exits: dict[str, int] = {}  # replica id: exit code, reported on the next poll
        self.released: list[str] = []
        self.full: set[str] = set()  # nodepools that get no new instance
        self.lost: list[tuple[str, str]] = []  # reported by the next lost_instances()
        self.told: list[NodepoolInfo] = []
        self._instances = 0

    def regions(self) -> list[str]:
        return ["local"]

    def instance_types(self, region: str) -> list[Any]:
        return []

    def check_shape(self, shape: ComputeShape) -> list[tuple[str, str]]:
        return []

    def set_nodepools(self, pools: list[NodepoolInfo]) -> None:
        self.told = pools

    def lost_instances(self) -> list[tuple[str, str]]:
        lost, self.lost = self.lost, []
        return lost

    def start_instance(self, pool: str, shape: ComputeShape) -> Instance:
        if pool in self.full:
            raise NoCapacity(f"every machine of {pool} is taken")
        self._instances += 1
        return Instance(f"i-{self._instances}", pool, shape, "CPUs 0")

    def stop_instance(self, instance_id: str) -> None:
        self.released.append(instance_id)

    def start_replica(self, launch: ReplicaLaunch) -> None:
        self.launched.append(launch)

    def stop_replica(self, replica_id: str, grace: float) -> None:
        self.stopped.append(replica_id)
        self.exits[replica_id] = 0

    def poll(self) -> list[ReplicaStatus]:
        statuses = []
        for launch in self.launched:
            code = self.exits.pop(launch.id, None)
            if code is not None:
                statuses.append(ReplicaStatus(launch.id, launch.instance_id, False, code))
        return statuses


@dataclass
class Hello:
    replica_id: str


@dataclass
class Connected:
    hello: Hello


@dataclass
class ScriptedDispatcher:
    connected: list[str] = field(default_factory=list)
    in_flight: int = 0
    waiting: int = 0

    def replicas(self) -> list[Connected]:
        return [Connected(Hello(r)) for r in self.connected]

    def load(self, pools: Any, version: Any) -> tuple[int, int]:
        return self.in_flight, self.waiting


@dataclass
class ScriptedStore:
    plans: list[DeploymentPlan]
    logs: list[tuple[Any, list[str]]] = field(default_factory=list)

    async def load(self) -> list[DeploymentPlan]:
        return list(self.plans)

    async def append_logs(self, entries: list[tuple[Any, list[str]]]) -> None:
        self.logs.extend(entries)

    def events(self) -> list[str]:
        return [
            line for ref, lines in self.logs if ref.log_type == "runner.events" for line in lines
        ]


def plan(tmp_path: Path, **autoscale: Any) -> DeploymentPlan:
    return DeploymentPlan(
        user_id="u",
        id="dep",
        version=VersionRef("u", "app", "m", "v1"),
        disabled=False,
        autoscale=AutoscaleSpec(**({"max_replicas": 2} | autoscale)),
        scheduling_choice=4,
        pools=(
            PoolPlan(
                key=POOL,
                priority=0,
                provider="local",
                shape=ComputeShape(cpus=1, memory_bytes=GIB),
                price=0.0,
                capacity_type=1,
                min_instances=0,
                max_instances=2,
                runner_id="runner-1",
            ),
        ),
        blocked="",
        package=tmp_path / "package",
        python=tmp_path / "python",
        concurrency=1,
        request=Resources(0.5, GIB // 4),
    )


def with_autoscale(deployment: DeploymentPlan, **autoscale: Any) -> DeploymentPlan:
    return replace(deployment, autoscale=AutoscaleSpec(**({"max_replicas": 2} | autoscale)))


def views(orchestrator: Orchestrator, deployment: DeploymentPlan) -> tuple[NodepoolView, ...]:
    """``deployment``'s nodepools as the next round's placement would see them."""
    world = observe(
        [deployment],
        orchestrator.providers,
        orchestrator.dispatcher,
        Started(orchestrator.apply.replicas, orchestrator.apply.instances),
        orchestrator._carried,
        orchestrator.settings,
        orchestrator.clock(),
    )
    return Capacity(world).views(deployment)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def rig(tmp_path: Path) -> Any:
    return make_rig(tmp_path, ScriptedProvider())


def make_rig(tmp_path: Path, provider: ScriptedProvider) -> Any:
    dispatcher = ScriptedDispatcher()
    store = ScriptedStore([plan(tmp_path)])
    clock = Clock()
    tokens: dict[str, str] = {}
    orchestrator = Orchestrator(
        OrchestratorSettings(home=tmp_path, server="unix:/tmp/orchard.sock", lost_grace=15.0),
        ProviderRegistry([provider]),
        dispatcher,  # type: ignore[arg-type]
        store,  # type: ignore[arg-type]
        tokens,
        clock=clock,
        wall_clock=clock,  # events are stamped by it too: nothing here reads the real time
    )
    return provider, dispatcher, store, clock, tokens, orchestrator


async def test_a_waiting_call_starts_a_replica_with_its_own_token(rig: Any) -> None:
    provider, dispatcher, _, _, tokens, orchestrator = rig
    await orchestrator.round()
    assert provider.launched == []  # min_replicas 0 and no traffic: nothing to run
    dispatcher.waiting = 1
    await orchestrator.round()
    (launch,) = provider.launched
    argv = list(launch.argv)
    assert argv[argv.index("--runner-id") + 1] == "runner-1"
    assert argv[argv.index("--server") + 1] == "unix:/tmp/orchard.sock"
    # its token goes on stdin, not in its argv or its environment (an allowlist)
    assert tokens == {launch.token: "u"} and launch.tenant == "u"
    assert "--pat-stdin" in argv and launch.token not in " ".join([*argv, *launch.env.values()])
    allowed = {"PATH", "HOME", "TMPDIR", "PYTHONUNBUFFERED", "LANG", "LC_ALL", "TZ"}
    assert set(launch.env) <= allowed | THREAD_COUNTS
    assert launch.jail is not None and launch.jail.private.name == launch.id
    assert launch.env["HOME"] == str(launch.jail.home)
    assert launch.memory_bytes == GIB // 4


async def test_a_failed_start_backs_off_and_reports_the_last_output(rig: Any) -> None:
    provider, dispatcher, store, clock, tokens, orchestrator = rig
    dispatcher.waiting = 1
    await orchestrator.round()
    first = provider.launched[0]
    first.log_path.parent.mkdir(parents=True, exist_ok=True)
    first.log_path.write_text("Traceback (most recent call last):\nRuntimeError: no weights\n")
    provider.exits[first.id] = 1
    await orchestrator.round()
    assert len(provider.launched) == 1  # backing off: no second try yet
    assert tokens == {}
    (event,) = [e for e in store.events() if "before it connected" in e]
    assert "exited with code 1" in event and "next try in 1 s" in event
    assert "RuntimeError: no weights" in event
    clock.now += 1.0
    await orchestrator.round()
    assert len(provider.launched) == 2
    provider.exits[provider.launched[1].id] = 1
    await orchestrator.round()
    clock.now += 1.0
    await orchestrator.round()
    assert len(provider.launched) == 2  # the second failure doubled the wait
    assert "next try in 2 s" in store.events()[-1]
    clock.now += 1.0
    await orchestrator.round()
    assert len(provider.launched) == 3


async def test_a_deleted_deployment_loses_its_replicas_and_instances(rig: Any) -> None:
    provider, dispatcher, store, _, tokens, orchestrator = rig
    store.plans = [with_autoscale(store.plans[0], min_replicas=2)]
    await orchestrator.round()
    assert len(provider.launched) == 2
    dispatcher.connected = [launch.id for launch in provider.launched]
    await orchestrator.round()
    store.plans = []
    await orchestrator.round()
    assert sorted(provider.stopped) == sorted(launch.id for launch in provider.launched)
    await orchestrator.round()  # the exits are seen
    assert tokens == {}
    assert provider.released == ["i-1"]
    assert orchestrator.view.deployments == {}


def two_pools(deployment: DeploymentPlan) -> DeploymentPlan:
    first = replace(deployment.pools[0], key=PoolKey("u", "cc", "np-a"), instance_type="a")
    second = replace(first, key=PoolKey("u", "cc", "np-b"), runner_id="runner-2", instance_type="b")
    return replace(deployment, pools=(first, second))


async def test_a_nodepool_without_room_sends_the_replica_to_another(rig: Any) -> None:
    provider, _, store, clock, _, orchestrator = rig
    store.plans = [two_pools(with_autoscale(store.plans[0], min_replicas=1))]
    provider.full = {"u/cc/np-a"}
    await orchestrator.round()
    assert [p.instance_type for p in provider.told] == ["a", "b"]
    assert provider.launched == []  # np-a came first and had no room
    await orchestrator.round()  # the orchestrator woke itself for this round
    assert any("no room for a replica in u/cc/np-a" in e for e in store.events())
    (launch,) = provider.launched
    assert "--nodepool-id np-b" in " ".join(launch.argv)
    clock.now += 10.0  # np-a may be tried again later
    assert views(orchestrator, store.plans[0])[0].can_add == 2


async def test_replicas_carry_what_another_machine_needs(rig: Any, tmp_path: Path) -> None:
    provider, dispatcher, store, _, _, orchestrator = rig
    source = VersionSource(tmp_path / "p.tar.gz", "d" * 64, "key1", "3.11", ("grpcio==1",))
    store.plans = [replace(store.plans[0], source=source)]
    orchestrator.settings = replace(
        orchestrator.settings, network_server="127.0.0.1:7600", offline=True
    )
    dispatcher.waiting = 1
    await orchestrator.round()
    (launch,) = provider.launched
    bundle = launch.bundle
    assert bundle is not None and bundle.server == "127.0.0.1:7600"
    assert (bundle.package, bundle.env_key, bundle.python_version) == (
        tmp_path / "p.tar.gz",
        "key1",
        "3.11",
    )
    assert "--package" not in bundle.args and bundle.args[:2] == ("--runner-id", "runner-1")
    assert launch.argv[-len(bundle.args) :] == bundle.args
    parsed = build_parser().parse_args(list(launch.argv[3:]))  # what the runner reads of it
    assert (parsed.replica_id, parsed.runner_id, parsed.pat_stdin) == (launch.id, "runner-1", True)
    create, install = bundle.commands
    assert create[-1] == "{env}" and "{python}" in create
    assert install[-2:] == ("grpcio==1", "--offline") and "{requirements}" in install
    assert (bundle.runtime / "orchard" / "runners" / "serve.py").exists()
    assert launch.cpus == 0.5


# -- GPUs ------------------------------------------------------------------------------------


def on_gpus(
    deployment: DeploymentPlan, gib: int, device_gib: int, **autoscale: Any
) -> DeploymentPlan:
    """The deployment with replicas of one GPU of ``gib`` (0: unknown) on a nodepool whose
    instances have one GPU of ``device_gib`` (0: not stated)."""
    shape = ComputeShape(
        cpus=2, memory_bytes=GIB, num_accelerators=1, accelerator_memory_bytes=device_gib * GIB
    )
    return replace(
        with_autoscale(deployment, **autoscale),
        pools=(replace(deployment.pools[0], shape=shape),),
        request=Resources(0.5, GIB // 4, 1, gib * GIB),
    )


async def test_replicas_that_state_gpu_memory_share_a_gpu(rig: Any) -> None:
    provider, _, store, _, _, orchestrator = rig
    store.plans = [on_gpus(store.plans[0], 40, 80, min_replicas=3, max_replicas=3)]
    await orchestrator.round()
    assert [launch.instance_id for launch in provider.launched] == ["i-1", "i-1", "i-2"]
    assert {launch.gpus for launch in provider.launched} == {GpuNeed(1, 40 * GIB, shared=True)}
    (view,) = views(orchestrator, store.plans[0])
    assert [i.devices for i in view.instances] == [
        (Device(0, 80 * GIB, 80 * GIB, sharers=2),),
        (Device(0, 80 * GIB, 40 * GIB, sharers=1),),
    ]


@pytest.mark.parametrize(
    ("gib", "autoscale"),
    [(40, {"disable_packing": True}), (0, {})],
    ids=["packing-disabled", "memory-unknown"],
)
async def test_without_packing_or_a_stated_memory_a_replica_holds_its_gpu(
    rig: Any, gib: int, autoscale: dict[str, Any]
) -> None:
    provider, _, store, _, _, orchestrator = rig
    store.plans = [on_gpus(store.plans[0], gib, 80, min_replicas=3, max_replicas=3, **autoscale)]
    await orchestrator.round()
    assert [launch.instance_id for launch in provider.launched] == ["i-1", "i-2"]
    assert {launch.gpus for launch in provider.launched} == {GpuNeed(1, gib * GIB, shared=False)}
    (view,) = views(orchestrator, store.plans[0])
    assert [i.devices for i in view.instances] == [(Device(0, 80 * GIB, held=True),)] * 2
    assert any("raise max_instances of nodepool cc/np" in e for e in store.events())


class SharingProvider(ScriptedProvider, SharesDevices):
    """Assigns the GPUs of its instances (one of 80 GiB each) by the rules, as the local
    provider does, and reports them."""

    def __init__(self) -> None:
        super().__init__()
        self.holds: dict[str, tuple[str, tuple[int, ...], GpuNeed]] = {}

    def devices(self, instance_id: str) -> tuple[Device, ...]:
        devices = devices_of(1, 80 * GIB)
        for held_on, indices, need in self.holds.values():
            if held_on == instance_id:
                devices = take_devices(devices, indices, need)
        return devices

    def start_replica(self, launch: ReplicaLaunch) -> None:
        indices = assign_devices(self.devices(launch.instance_id), launch.gpus)
        self.holds[launch.id] = (launch.instance_id, indices, launch.gpus)
        super().start_replica(launch)


async def test_placement_plans_on_the_gpus_the_provider_reports(tmp_path: Path) -> None:
    provider, _, store, _, _, orchestrator = make_rig(tmp_path, SharingProvider())
    # The nodepool does not state its GPU memory: a new instance is planned for one replica.
    store.plans = [on_gpus(store.plans[0], 40, 0, min_replicas=1)]
    await orchestrator.round()
    store.plans = [on_gpus(store.plans[0], 40, 0, min_replicas=2)]
    await orchestrator.round()
    # The provider says the device has 80 GiB, 40 of them free: the second shares it.
    assert [launch.instance_id for launch in provider.launched] == ["i-1", "i-1"]


@pytest.mark.parametrize(
    ("disable_packing", "device"),
    [(False, Device(0, 80 * GIB, 40 * GIB, sharers=1)), (True, Device(0, 80 * GIB, held=True))],
    ids=["packing", "packing-disabled"],
)
async def test_a_launch_carries_whether_its_deployment_lets_it_share_gpus(
    tmp_path: Path, disable_packing: bool, device: Device
) -> None:
    provider, _, store, _, _, orchestrator = make_rig(tmp_path, SharingProvider())
    store.plans = [on_gpus(store.plans[0], 40, 80, min_replicas=1, disable_packing=disable_packing)]
    await orchestrator.round()
    [launch] = provider.launched
    assert launch.gpus == GpuNeed(1, 40 * GIB, shared=not disable_packing)
    assert provider.devices(launch.instance_id) == (device,)


# -- failures stay with their deployment ----------------------------------------------------


class FailingProvider(ScriptedProvider):
    """Raises an unexpected error when asked for a replica of deployment ``bad``."""

    def start_replica(self, launch: ReplicaLaunch) -> None:
        if launch.id.startswith("bad-"):
            raise RuntimeError("the provider broke")
        super().start_replica(launch)


async def test_a_deployment_whose_round_raises_leaves_the_others_running(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    provider, _, store, _, _, orchestrator = make_rig(tmp_path, FailingProvider())
    good = with_autoscale(store.plans[0], min_replicas=1)
    bad = replace(good, id="bad", pools=(replace(good.pools[0], key=PoolKey("u", "cc", "np2")),))
    store.plans = [bad, good]
    for _ in range(5):
        await orchestrator.round()
    assert [launch.id.split("-")[0] for launch in provider.launched] == ["dep"]
    problem = orchestrator.view.deployments[("u", "bad")].problem
    assert "Orchard failed to run this deployment (RuntimeError: the provider broke)" in problem
    assert sum("the provider broke" in e for e in store.events()) == 1
    logged = [r for r in caplog.records if "the provider broke" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None  # once, with its traceback


async def test_a_deployment_that_cannot_be_planned_keeps_its_replicas_and_starts_none(
    rig: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="orchard.orchestration.reconciler")
    provider, dispatcher, store, _, _, orchestrator = rig
    planned = with_autoscale(store.plans[0], min_replicas=1)
    store.plans = [planned]
    await orchestrator.round()
    (launch,) = provider.launched
    dispatcher.connected = [launch.id]
    reason = "Orchard cannot plan deployment 'dep' (ValidationError: 1 validation error)"
    unplanned = replace(planned, pools=(), blocked=reason, planned=False, package=None)
    store.plans = [unplanned]
    for _ in range(3):
        await orchestrator.round()
    dispatcher.waiting = 5  # it would want more, but starts none
    await orchestrator.round()
    assert provider.stopped == [] and len(provider.launched) == 1
    assert orchestrator.view.deployments[("u", "dep")].problem == reason
    assert sum(reason in e for e in store.events()) == 1
    assert sum(reason in r.getMessage() for r in caplog.records if r.levelname == "WARNING") == 1
    store.plans = [planned]
    await orchestrator.round()
    assert any("works again, after failing 4 time(s)" in r.getMessage() for r in caplog.records)


async def test_a_deployment_never_planned_says_why_in_its_nodepools_events(rig: Any) -> None:
    _, _, store, _, _, orchestrator = rig
    reason = "Orchard cannot plan deployment 'dep' (KeyError: 'instance_types')"
    pool = replace(store.plans[0].pools[0], provider="", runner_id="")
    store.plans = [replace(store.plans[0], pools=(pool,), blocked=reason, planned=False)]
    await orchestrator.round()
    assert orchestrator.view.deployments[("u", "dep")].problem == reason
    ((ref, lines),) = [(r, ls) for r, ls in store.logs if r.log_type == "runner.events"]
    assert (ref.compute_cluster_id, ref.nodepool_id) == ("cc", "np") and reason in lines[0]
