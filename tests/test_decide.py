"""decide (pure): one deployment's situation in, its actions out, as a table. The rounds that
carry them out against a scripted provider are in test_reconciler.py."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from orchard.configs import AutoscaleSpec
from orchard.orchestration.autoscale import LoadSample, ScaleState
from orchard.orchestration.decide import (
    Action,
    Event,
    Problem,
    RunningReplica,
    Situation,
    Start,
    Stop,
    decide,
)
from orchard.orchestration.resources import InstanceView, NodepoolView, Resources
from orchard.providers.base import ComputeShape
from orchard.quotas import Headroom, capped
from tests.test_reconciler import plan

GIB = 2**30
SHAPE = ComputeShape(cpus=1, memory_bytes=GIB)
POOL = NodepoolView(("cc", "np"), SHAPE, can_add=2)
FULL = replace(POOL, can_add=0)
HALF = Resources(0.5, GIB // 4)
ONE = replace(POOL, instances=(InstanceView("i-1", SHAPE, HALF, 1),))
NOW = 1000.0
ROOM_FOR_ONE = Headroom(1, "replicas", "user 'u' has room for 1 more replica")


def situation(autoscale: dict[str, Any] | None = None, **fields: Any) -> Situation:
    deployment = plan(Path("/nowhere"))
    deployment = replace(
        deployment,
        autoscale=AutoscaleSpec(**({"max_replicas": 2} | (autoscale or {}))),
        blocked=fields.pop("blocked", ""),
        disabled=fields.pop("disabled", False),
    )
    base: dict[str, Any] = {
        "plan": deployment,
        "replicas": (),
        "in_flight": 0,
        "queued": 0,
        "scale": ScaleState(),
        "samples": (),
        "retry_at": 0.0,
        "room": Headroom(None),
        "nodepools": (POOL,),
        "now": NOW,
    }
    return Situation(**(base | fields))


def said(action: Action) -> str:
    if isinstance(action, Problem):
        return f"problem: {action.text}"
    if isinstance(action, Event):
        return "event"
    if isinstance(action, Stop):
        return f"stop {action.replica_id}"
    assert isinstance(action, Start)
    where = action.placement
    assert where.nodepool is not None
    return f"start {where.nodepool[1]}/{where.instance_id}{' (new)' if where.new_instance else ''}"


def replica(id: str, connected: bool = True) -> RunningReplica:
    return RunningReplica(id, ("cc", "np"), "i-1", connected)


def unplaced(deployment_id: str = "dep") -> str:
    return (
        f"problem: no nodepool of deployment {deployment_id} has room for 0.5 CPUs / 0.25 GiB: "
        "raise max_instances of nodepool cc/np or use a larger instance type"
    )


TABLE: list[tuple[str, Situation, list[str]]] = [
    ("nothing asked, nothing done", situation(), []),
    (
        "a waiting call starts a replica on a new instance",
        situation(queued=1),
        ["event", "start np/new-1 (new)"],
    ),
    (
        "a replica goes where an instance has room",
        situation(queued=1, nodepools=(ONE,)),
        ["event", "start np/i-1"],
    ),
    (
        "blocked: it says why and starts nothing",
        situation(queued=1, blocked="no package"),
        ["problem: no package", "event"],
    ),
    (
        "backing off after a failed start: it starts nothing yet",
        situation(queued=1, retry_at=NOW + 1),
        ["event"],
    ),
    (
        "its user's quota caps the replicas it starts, and it says so",
        situation({"min_replicas": 2}, room=ROOM_FOR_ONE),
        ["event", f"problem: {capped(ROOM_FOR_ONE, 2)}", "start np/new-1 (new)"],
    ),
    (
        "no room in any nodepool: it says why, with the fix",
        situation(queued=1, nodepools=(FULL,)),
        ["event", unplaced()],
    ),
    (
        "too many: the unconnected replica goes first",
        situation(
            {"max_replicas": 1},
            scale=ScaleState(desired=2),
            replicas=(replica("r-1"), replica("r-2", connected=False)),
            nodepools=(ONE,),
        ),
        ["event", "stop r-2"],
    ),
    (
        "disabled: every replica goes",
        situation(disabled=True, scale=ScaleState(desired=1), replicas=(replica("r-1"),)),
        ["event", "stop r-1"],
    ),
    (
        "steady: the replicas it has are the ones it wants",
        situation({"min_replicas": 1}, scale=ScaleState(desired=1), replicas=(replica("r-1"),)),
        [],
    ),
]


@pytest.mark.parametrize(
    ("world", "actions"), [(w, a) for _, w, a in TABLE], ids=[name for name, _, _ in TABLE]
)
def test_decide(world: Situation, actions: list[str]) -> None:
    assert [said(a) for a in decide(world).actions] == actions


def test_the_load_joins_the_window_and_old_samples_leave_it() -> None:
    old = LoadSample(NOW - 10_000, 5)
    recent = LoadSample(NOW - 1, 1)
    decision = decide(situation(samples=(old, recent), in_flight=2))
    assert decision.samples == (recent, LoadSample(NOW, 2, 0))


def test_the_autoscaler_state_is_returned_for_the_next_round() -> None:
    decision = decide(situation(queued=1))
    assert decision.scale.desired == 1 and decision.scale.last_scale_up == NOW
