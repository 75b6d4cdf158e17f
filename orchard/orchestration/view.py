"""The read model the API serves: what the orchestrator last saw, made once per round."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field

from orchard.ids import PoolKey
from orchard.orchestration.journal import Told
from orchard.orchestration.snapshot import DeploymentPlan
from orchard.orchestration.world import DeploymentKey, DeploymentMemory, Memory, Replica


@dataclass(frozen=True)
class LiveReplica:
    id: str
    deployment_id: str
    nodepool: PoolKey
    runner_id: str
    instance_id: str
    where: str
    state: str  # starting, ready, draining


@dataclass(frozen=True)
class LiveDeployment:
    desired: int
    live: int
    in_flight: int  # items running on its replicas
    queued: int  # calls waiting for a replica
    replicas: tuple[LiveReplica, ...]
    events: tuple[str, ...]
    problem: str


@dataclass(frozen=True)
class LiveView:
    """What the orchestrator last saw, for the API (immutable: handlers read it from threads)."""

    deployments: dict[tuple[str, str], LiveDeployment] = field(default_factory=dict)
    nodepools: dict[PoolKey, int] = field(default_factory=dict)  # instances running
    runners: dict[str, int] = field(default_factory=dict)  # replicas per runner id


def publish(
    plans: Iterable[DeploymentPlan],
    replicas: Iterable[Replica],
    connected: Set[str],
    instance_pools: Iterable[PoolKey],
    memory: Memory,
    told: Mapping[DeploymentKey, Told],
) -> LiveView:
    """The view of this round's ``plans``, ``replicas`` (``connected``: those with a work
    stream), instances (by nodepool), decide's ``memory`` and what the journal ``told``."""
    replicas = list(replicas)
    nodepools: dict[PoolKey, int] = {}
    for pool_key in instance_pools:
        nodepools[pool_key] = nodepools.get(pool_key, 0) + 1
    runners: dict[str, int] = {}
    for r in replicas:
        if not r.stopping:
            runners[r.pool.runner_id] = runners.get(r.pool.runner_id, 0) + 1
    deployments = {}
    for plan in plans:
        mine = [r for r in replicas if r.deployment == plan.key]
        deployments[plan.key] = _deployment_view(
            plan, mine, connected, memory.of(plan.key), told.get(plan.key) or Told()
        )
    return LiveView(deployments, nodepools, runners)


def _deployment_view(
    plan: DeploymentPlan,
    mine: list[Replica],
    connected: Set[str],
    memory: DeploymentMemory,
    told: Told,
) -> LiveDeployment:
    return LiveDeployment(
        desired=memory.scale.desired,
        live=sum(1 for r in mine if r.id in connected and not r.stopping),
        in_flight=memory.in_flight,
        queued=memory.queued,
        replicas=tuple(_replica_view(plan, r, r.id in connected) for r in mine),
        events=tuple(told.events),
        problem=told.problem,
    )


def _replica_view(plan: DeploymentPlan, r: Replica, connected: bool) -> LiveReplica:
    return LiveReplica(
        r.id,
        plan.id,
        r.pool.key,
        r.pool.runner_id,
        r.instance.id,
        r.instance.where,
        "draining" if r.stopping else "ready" if connected else "starting",
    )
