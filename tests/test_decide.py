"""decide (pure): a whole round's world in, its actions out, as a table. The rounds that observe
a scripted provider and carry the actions out are in test_reconciler.py."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from orchard.configs import AutoscaleSpec
from orchard.ids import PoolKey
from orchard.orchestration.actions import (
    Action,
    CannotDecide,
    Drop,
    Event,
    Forget,
    Problem,
    Release,
    Solved,
    Start,
    Stop,
    failure,
)
from orchard.orchestration.autoscale import LoadSample, ScaleState
from orchard.orchestration.decide import decide
from orchard.orchestration.snapshot import DeploymentPlan
from orchard.orchestration.world import (
    DeploymentMemory,
    InstanceFact,
    Memory,
    ReplicaEnd,
    ReplicaFact,
    World,
)
from orchard.providers.base import ComputeShape
from orchard.quotas import Quota, Quotas
from tests.test_reconciler import plan

GIB = 2**30
SHAPE = ComputeShape(cpus=1, memory_bytes=GIB)
NOW = 1000.0
DEP = ("u", "dep")


def deployment(
    dep: str = "dep", user: str = "u", nodepool: str = "np", **autoscale: Any
) -> DeploymentPlan:
    """A deployment of ``user`` on one nodepool of 2 instances of 1 CPU and 1 GiB; a replica
    takes 0.5 CPUs and 0.25 GiB."""
    base = plan(Path("/nowhere"))
    pool = replace(
        base.pools[0], key=PoolKey(user, "cc", nodepool), runner_id=f"runner-{dep}-{nodepool}"
    )
    spec = AutoscaleSpec(**({"max_replicas": 2} | autoscale))
    return replace(base, user_id=user, id=dep, pools=(pool,), autoscale=spec)


DEPLOYMENT = deployment()


def replica(
    id: str,
    of: DeploymentPlan = DEPLOYMENT,
    instance: str = "i-1",
    connected: bool = True,
    **fields: Any,
) -> ReplicaFact:
    pool = of.pools[0]
    return ReplicaFact(
        id, of.key, pool.key, pool.runner_id, of.version, instance, of.request,
        connected=connected, **fields,
    )  # fmt: skip


def instance(id: str = "i-1", nodepool: str = "np", user: str = "u", **fields: Any) -> InstanceFact:
    return InstanceFact(id, PoolKey(user, "cc", nodepool), SHAPE, **fields)


def ready(*ids: str, **deployments: DeploymentMemory) -> Memory:
    """Memory in which replicas ``ids`` have connected before (``deployments``: by id, of u)."""
    return Memory({("u", d): m for d, m in deployments.items()}, frozenset(ids))


def world(*plans: DeploymentPlan, **fields: Any) -> World:
    load = fields.pop("load", {})
    if isinstance(load, tuple):
        load = {DEP: load}
    return World(
        plans=plans or (DEPLOYMENT,),
        load=load,
        now=NOW,
        rng=random.Random(0),
        **fields,
    )


def said(action: Action) -> str:
    """An action in a few words."""
    if isinstance(action, Problem):
        return f"problem{' (quiet)' if action.quiet else ''}: {action.text}"
    if isinstance(action, Solved):
        return "solved" if action.text is None else f"solved if: {action.text}"
    if isinstance(action, Event):
        text = "desired" if action.text.startswith("desired replicas") else action.text
        return f"event: {text}"
    if isinstance(action, Stop):
        return f"stop {action.replica_id}"
    if isinstance(action, Forget):
        return f"forget {action.replica_id}"
    if isinstance(action, Drop):
        return f"drop {action.instance_id}"
    if isinstance(action, Release):
        return f"release {action.instance_id}"
    if isinstance(action, CannotDecide):
        return f"failed {action.deployment[1]}: {action.error}"
    assert isinstance(action, Start)
    where = action.placement
    assert where.nodepool is not None
    new = " (new)" if where.new_instance else ""
    return f"start {action.deployment[1]} on {where.nodepool[1]}/{where.instance_id}{new}"


def unplaced(deployment_id: str = "dep", nodepool: str = "cc/np") -> str:
    return (
        f"problem: no nodepool of deployment {deployment_id} has room for 0.5 CPUs / 0.25 GiB: "
        f"raise max_instances of nodepool {nodepool} or use a larger instance type"
    )


HALF_FULL = (instance("i-1"),)  # with one replica of DEPLOYMENT on it: room for one more
AT_FLOOR_1 = DeploymentMemory(ScaleState(desired=1))
IDLE_FOR_LONG = DeploymentMemory(ScaleState(desired=1, below_since=NOW - 10_000))
QUOTA_3 = Quotas(Quota(replicas=3))
GONE = ReplicaEnd(1, "", ("Traceback (most recent call last):", "RuntimeError: no weights"))
KILLED = ReplicaEnd(-9, "")
BROKE = RuntimeError("the dispatcher broke")
NO_ROOM_A = "no room for a replica in u/cc/np-a: every machine of u/cc/np-a is taken"

TABLE: list[tuple[str, World, list[str]]] = [
    # -- scaling ------------------------------------------------------------------------------
    ("nothing asked, nothing done", world(), []),
    (
        "a waiting call starts a replica on a new instance",
        world(load=(0, 1)),
        ["event: desired", "start dep on np/new-1 (new)"],
    ),
    (
        "the floor starts replicas, packed on one new instance",
        world(deployment(min_replicas=2)),
        ["event: desired", "start dep on np/new-1 (new)", "start dep on np/new-1 (new)"],
    ),
    (
        "a replica goes where an instance has room",
        world(
            deployment(min_replicas=2),
            replicas=(replica("r-1"),),
            instances=HALF_FULL,
            memory=ready("r-1", dep=AT_FLOOR_1),
        ),
        ["event: desired", "start dep on np/i-1"],
    ),
    (
        "steady: the replicas it has are the ones it wants",
        world(
            deployment(min_replicas=1),
            replicas=(replica("r-1"),),
            instances=HALF_FULL,
            memory=ready("r-1", dep=AT_FLOOR_1),
        ),
        [],
    ),
    (
        "too many: the unconnected replica goes first",
        world(
            deployment(max_replicas=1),
            replicas=(replica("r-1"), replica("r-2", connected=False)),
            instances=HALF_FULL,
            memory=ready("r-1", dep=DeploymentMemory(ScaleState(desired=2))),
        ),
        ["event: desired", "stop r-2"],
    ),
    (
        "idle past the delays: it scales to zero",
        world(
            replicas=(replica("r-1"),),
            instances=HALF_FULL,
            memory=ready("r-1", dep=IDLE_FOR_LONG),
        ),
        ["event: desired", "stop r-1"],
    ),
    (
        "disabled: every replica goes",
        world(
            replace(DEPLOYMENT, disabled=True),
            replicas=(replica("r-1"),),
            instances=HALF_FULL,
            memory=ready("r-1", dep=AT_FLOOR_1),
        ),
        ["event: desired", "stop r-1"],
    ),
    # -- quotas -------------------------------------------------------------------------------
    (
        "its user's quota caps the replicas it starts, and it says so",
        world(
            deployment(min_replicas=2),
            deployment("other"),
            replicas=(replica("r-0", deployment("other")),),
            instances=HALF_FULL,
            memory=ready("r-0", other=AT_FLOOR_1),
            quotas=Quotas(Quota(replicas=2)),
        ),
        [
            "event: desired",
            "problem: user 'u' has room for 1 more replica under its quota of 2 replicas (1 "
            "replica in use, 1 replica each): starting 1 of 2 more replicas wanted; ask the "
            "operator to raise it (orchard serve --quota-replicas, or the quotas file) or "
            "lower min_replicas of another deployment",
            "start dep on np/i-1",
        ],
    ),
    (
        "one round shares a quota between a user's deployments; another user's is its own",
        world(
            deployment("a", min_replicas=2),
            deployment("b", min_replicas=2),
            deployment("c", user="v", min_replicas=2),
            quotas=QUOTA_3,
        ),
        [
            "event: desired",
            "start a on np/new-1 (new)",
            "start a on np/new-1 (new)",
            "event: desired",
            "problem: user 'u' has room for 1 more replica under its quota of 3 replicas (2 "
            "replicas in use, 1 replica each): starting 1 of 2 more replicas wanted; ask the "
            "operator to raise it (orchard serve --quota-replicas, or the quotas file) or "
            "lower min_replicas of another deployment",
            "start b on np/new-2 (new)",
            "event: desired",
            "start c on np/new-1 (new)",
            "start c on np/new-1 (new)",
        ],
    ),
    (
        "a draining replica still holds its user's quota",
        world(
            deployment(min_replicas=1),
            replicas=(replica("r-0", deployment("old"), stopping=True),),
            instances=HALF_FULL,
            memory=ready("r-0"),
            quotas=Quotas(Quota(replicas=1)),
        ),
        [
            "event: desired",
            "problem: user 'u' is at its quota of 1 replica (1 replica in use): starting 0 of 1 "
            "more replicas wanted; ask the operator to raise it (orchard serve "
            "--quota-replicas, or the quotas file) or lower min_replicas of another deployment",
        ],
    ),
    (
        "a CPU quota counts what each replica asks for",
        world(
            deployment(min_replicas=4, max_replicas=4),
            replicas=(replica("r-1"), replica("r-2")),
            instances=HALF_FULL,
            memory=ready("r-1", "r-2", dep=DeploymentMemory(ScaleState(2))),
            quotas=Quotas(users={"u": Quota(cpus=1.0)}),
        ),
        [
            "event: desired",
            "problem: user 'u' is at its quota of 1 CPU (1 CPU in use): starting 0 of 2 more "
            "replicas wanted; ask the operator to raise it (orchard serve --quota-cpus, or the "
            "quotas file) or lower min_replicas of another deployment",
        ],
    ),
    # -- capacity across deployments ----------------------------------------------------------
    (
        "a later deployment sees the instance an earlier one starts, and the room it took",
        world(
            deployment("a", min_replicas=1, max_replicas=1),
            deployment("b", min_replicas=1, max_replicas=1),
            deployment("c", min_replicas=2),
        ),
        [
            "event: desired",
            "start a on np/new-1 (new)",
            "event: desired",
            "start b on np/new-1 (new)",
            "event: desired",
            "start c on np/new-2 (new)",
            "start c on np/new-2 (new)",
        ],
    ),
    (
        "when the earlier deployments took the room, the later one says why",
        world(
            deployment("a", min_replicas=2),
            deployment("b", min_replicas=2),
            deployment("c", min_replicas=1),
        ),
        [
            "event: desired",
            "start a on np/new-1 (new)",
            "start a on np/new-1 (new)",
            "event: desired",
            "start b on np/new-2 (new)",
            "start b on np/new-2 (new)",
            "event: desired",
            unplaced("c"),
        ],
    ),
    (
        "no room in any nodepool: it says why, with the fix",
        world(
            deployment(max_replicas=5),
            replicas=tuple(replica(f"r-{n}", instance=f"i-{1 + n % 2}") for n in range(4)),
            instances=(instance("i-1"), instance("i-2")),
            memory=ready(*(f"r-{n}" for n in range(4)), dep=DeploymentMemory(ScaleState(4))),
            load=(4, 1),
        ),
        ["event: desired", unplaced()],
    ),
    # -- instances ----------------------------------------------------------------------------
    (
        "an idle instance is released, down to min_instances",
        world(
            replicas=(replica("r-1"),),
            instances=(instance("i-1"), instance("i-2"), instance("i-9", nodepool="gone")),
            memory=ready("r-1", dep=AT_FLOOR_1),
            load=(1, 0),
        ),
        ["release i-2", "release i-9"],
    ),
    (
        "min_instances keeps an idle instance",
        world(
            replace(DEPLOYMENT, pools=(replace(DEPLOYMENT.pools[0], min_instances=1),)),
            instances=(instance("i-1"), instance("i-2")),
        ),
        ["release i-1"],
    ),
    (
        "an instance its provider lost is dropped, and its ended replica replaced elsewhere",
        world(
            deployment(min_replicas=1),
            replicas=(replica("r-1", ended=KILLED),),
            instances=(instance("i-1", lost="its machine died"),),
            memory=ready("r-1", dep=AT_FLOOR_1),
        ),
        [
            "drop i-1",
            "event: replica r-1 exited with code -9; replacing it",
            "forget r-1",
            "start dep on np/new-1 (new)",
        ],
    ),
    # -- blocked deployments and failures stay with their deployment ----------------------
    (
        "blocked: it says why and starts nothing; the others carry on",
        world(
            replace(deployment("a"), blocked="no package"),
            deployment("b", min_replicas=1),
            load={("u", "a"): (0, 1)},
        ),
        [
            "problem: no package",
            "event: desired",
            "event: desired",
            "start b on np/new-1 (new)",
        ],
    ),
    (
        "no longer blocked: its problem goes, if it is still that",
        world(memory=ready(dep=DeploymentMemory(blocked="no package"))),
        ["solved if: no package"],
    ),
    (
        "a load that cannot be read fails that deployment alone",
        world(
            deployment("a", min_replicas=1),
            deployment("b", min_replicas=1),
            load={("u", "a"): BROKE},
        ),
        ["failed a: the dispatcher broke", "event: desired", "start b on np/new-1 (new)"],
    ),
    (
        "what the last round's provider could not do is its problem now; it tries again",
        world(deployment(min_replicas=1), not_done={DEP: failure("RuntimeError: it broke")}),
        [
            f"problem: {failure('RuntimeError: it broke')}",
            "event: desired",
            "start dep on np/new-1 (new)",
        ],
    ),
    (
        "a nodepool the last round found without room is skipped for a while",
        world(
            replace(
                deployment(min_replicas=1),
                pools=(
                    replace(DEPLOYMENT.pools[0], key=PoolKey("u", "cc", "np-a"), priority=1),
                    replace(DEPLOYMENT.pools[0], key=PoolKey("u", "cc", "np-b")),
                ),
            ),
            no_room={PoolKey("u", "cc", "np-a"): NOW + 1},
            not_done={DEP: NO_ROOM_A},
        ),
        [f"problem: {NO_ROOM_A}", "event: desired", "start dep on np-b/new-1 (new)"],
    ),
    (
        "and tried again once the while has passed",
        world(
            deployment(min_replicas=1, nodepool="np-a"),
            no_room={PoolKey("u", "cc", "np-a"): NOW},
        ),
        ["event: desired", "start dep on np-a/new-1 (new)"],
    ),
    # -- drain ---------------------------------------------------------------------------------
    (
        "a replica of a deleted deployment drains, and holds its instance until it ends",
        world(
            deployment("other"),
            replicas=(replica("r-1"),),
            instances=HALF_FULL,
            memory=ready("r-1"),
        ),
        ["stop r-1"],
    ),
    (
        "a replica of another version drains, and one of the new version replaces it",
        world(
            deployment(min_replicas=1),
            replicas=(
                replace(replica("r-1"), version=replace(DEPLOYMENT.version, version_id="v0")),
            ),
            instances=HALF_FULL,
            memory=ready("r-1", dep=AT_FLOOR_1),
        ),
        ["stop r-1", "start dep on np/i-1"],
    ),
    (
        "a draining replica that ended is forgotten, without an event",
        world(
            replicas=(replica("r-1", stopping=True, ended=ReplicaEnd(0, "")),), memory=ready("r-1")
        ),
        ["forget r-1"],
    ),
    # -- restarts ------------------------------------------------------------------------------
    (
        "a ready replica that died is replaced at once",
        world(
            deployment(min_replicas=1),
            replicas=(replica("r-1", connected=False, ended=KILLED),),
            instances=HALF_FULL,
            memory=ready("r-1", dep=AT_FLOOR_1),
        ),
        [
            "event: replica r-1 exited with code -9; replacing it",
            "forget r-1",
            "start dep on np/i-1",
        ],
    ),
    (
        "a replica that died before it connected is a failed start: the deployment backs off",
        world(
            deployment(min_replicas=1),
            replicas=(replica("r-1", connected=False, ended=GONE),),
            instances=HALF_FULL,
            memory=ready(dep=AT_FLOOR_1),
        ),
        [
            "event: replica r-1 exited with code 1 before it connected (failed start 1); next try "
            "in 1 s; its last output:\nTraceback (most recent call last):\n"
            "RuntimeError: no weights",
            "problem (quiet): replica r-1 exited with code 1 before it connected (failed start "
            "1); next try in 1 s",
            "forget r-1",
            "release i-1",
        ],
    ),
    (
        "backing off after a failed start: it starts nothing yet",
        world(load=(0, 1), memory=ready(dep=DeploymentMemory(failed_starts=1, retry_at=NOW + 1))),
        ["event: desired"],
    ),
    (
        "its first connection makes a replica ready, and its deployment's problem goes",
        world(
            deployment(min_replicas=1),
            replicas=(replica("r-1"),),
            instances=HALF_FULL,
            memory=ready(dep=replace(AT_FLOOR_1, failed_starts=2)),
        ),
        ["solved", "event: replica r-1 connected and is ready"],
    ),
    (
        "a ready replica whose stream is away is given lost_grace",
        world(
            deployment(min_replicas=1),
            replicas=(replica("r-1", connected=False),),
            instances=HALF_FULL,
            memory=replace(ready("r-1", dep=AT_FLOOR_1), lost_since={"r-1": NOW - 14}),
        ),
        [],
    ),
    (
        "then stopped, and replaced in the same round",
        world(
            deployment(min_replicas=1),
            replicas=(replica("r-1", connected=False),),
            instances=HALF_FULL,
            memory=replace(ready("r-1", dep=AT_FLOOR_1), lost_since={"r-1": NOW - 15}),
        ),
        ["stop r-1", "start dep on np/i-1"],
    ),
]


@pytest.mark.parametrize(
    ("world", "actions"), [(w, a) for _, w, a in TABLE], ids=[name for name, _, _ in TABLE]
)
def test_decide(world: World, actions: list[str]) -> None:
    assert [said(a) for a in decide(world).actions] == actions


def test_the_load_joins_the_window_and_old_samples_leave_it() -> None:
    old = LoadSample(NOW - 10_000, 5)
    recent = LoadSample(NOW - 1, 1)
    memory = ready(dep=DeploymentMemory(samples=(old, recent)))
    decided = decide(world(memory=memory, load=(2, 0))).memory.of(DEP)
    assert decided.samples == (recent, LoadSample(NOW, 2, 0))
    assert (decided.in_flight, decided.queued) == (2, 0)


def test_the_autoscaler_state_is_remembered_for_the_next_round() -> None:
    decided = decide(world(load=(0, 1))).memory.of(DEP)
    assert decided.scale.desired == 1 and decided.scale.last_scale_up == NOW


def test_a_failed_start_is_remembered_and_the_wait_doubles() -> None:
    ended = world(replicas=(replica("r-1", connected=False, ended=GONE),))
    first = decide(ended).memory.of(DEP)
    assert (first.failed_starts, first.retry_at) == (1, NOW + 1)
    again = replace(ended, memory=Memory({DEP: first}), now=NOW + 1)
    second = decide(again).memory.of(DEP)
    assert (second.failed_starts, second.retry_at) == (2, NOW + 1 + 2)


def test_what_is_remembered_of_replicas_goes_with_them() -> None:
    memory = replace(ready("r-1", "r-2"), lost_since={"r-1": NOW - 1, "r-2": NOW - 1})
    after = decide(world(replicas=(replica("r-1", connected=False),), memory=memory)).memory
    assert after.ready == {"r-1"} and dict(after.lost_since) == {"r-1": NOW - 1}


def test_a_deleted_deployment_is_forgotten() -> None:
    memory = ready(dep=AT_FLOOR_1, gone=AT_FLOOR_1)
    assert set(decide(world(memory=memory)).memory.deployments) == {DEP}


def test_the_same_world_gives_the_same_actions() -> None:
    many = world(deployment("a", min_replicas=2), deployment("b", min_replicas=2))
    assert decide(many).actions == decide(many).actions
