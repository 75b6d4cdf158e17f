"""The first step of a round and its only intake: what the outside says, read and not acted on.

:func:`observe` reads the dispatcher (which replicas have a work stream, each deployment's
load), the providers (which replicas ended and which instances were lost, each said once; the
GPUs of instances whose provider assigns them) and the last lines of what an ended replica
printed, and puts them beside what apply started and what the last round handed on
(:class:`Carried`: decide's memory, the nodepools apply found without room, what it could not
do). What comes out is the round's :class:`~orchard.orchestration.world.World`; nothing is
changed, started, stopped or forgotten here.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from orchard.dispatch.dispatcher import Dispatcher
from orchard.ids import PoolKey
from orchard.orchestration.capacity import no_room_now
from orchard.orchestration.replica_logs import last_lines
from orchard.orchestration.snapshot import DeploymentPlan
from orchard.orchestration.world import (
    DeploymentKey,
    InstanceFact,
    Load,
    Memory,
    OrchestratorSettings,
    Replica,
    ReplicaEnd,
    ReplicaFact,
    StartedInstance,
    World,
)
from orchard.providers import ProviderRegistry
from orchard.providers.base import ReplicaStatus
from orchard.providers.gpus import SharesDevices


@dataclass(frozen=True)
class Carried:
    """What one round hands the next: decide's memory, and the facts of its apply."""

    memory: Memory = field(default_factory=Memory)
    no_room: Mapping[PoolKey, float] = field(default_factory=dict)  # nodepool: until when
    not_done: Mapping[DeploymentKey, str] = field(default_factory=dict)  # apply: its problem


@dataclass(frozen=True)
class Started:
    """What apply has started and not yet forgotten (read here, never changed)."""

    replicas: Mapping[str, Replica]
    instances: Mapping[str, StartedInstance]


def observe(
    plans: Sequence[DeploymentPlan],
    providers: ProviderRegistry,
    dispatcher: Dispatcher,
    started: Started,
    carried: Carried,
    settings: OrchestratorSettings,
    now: float,
    rng: random.Random | None = None,
) -> World:
    """This round's world; see the module docstring."""
    connected = frozenset(replica.hello.replica_id for replica in dispatcher.replicas())
    ended = {s.id: s for p in providers.all() for s in p.poll() if not s.running}
    lost = dict(pair for provider in providers.all() for pair in provider.lost_instances())
    replicas = tuple(
        _replica_fact(r, r.id in connected, ended.get(r.id), carried.memory)
        for r in started.replicas.values()
    )
    instances = tuple(
        _instance_fact(one, providers, lost.get(instance_id, ""))
        for instance_id, one in started.instances.items()
    )
    return World(
        plans=tuple(plans),
        replicas=replicas,
        instances=instances,
        load={plan.key: _load(dispatcher, plan) for plan in plans},
        no_room=no_room_now(carried.no_room, now),
        not_done=dict(carried.not_done),
        memory=carried.memory,
        quotas=settings.quotas,
        lost_grace=settings.lost_grace,
        now=now,
        rng=rng,
    )


def _load(dispatcher: Dispatcher, plan: DeploymentPlan) -> Load | Exception:
    try:
        return dispatcher.load([p.key for p in plan.pools], plan.version)
    except Exception as exc:  # that deployment's failure alone
        return exc


def _replica_fact(
    replica: Replica, connected: bool, status: ReplicaStatus | None, memory: Memory
) -> ReplicaFact:
    ended = None
    if status is not None:
        # What it printed last tells why a start failed (one that never connected).
        failed_start = not replica.stopping and replica.id not in memory.ready
        tail = tuple(last_lines(replica.log_path)) if failed_start else ()
        ended = ReplicaEnd(status.exit_code, status.reason, tail)
    return ReplicaFact(
        id=replica.id,
        deployment=replica.deployment,
        nodepool=replica.pool.key,
        runner_id=replica.pool.runner_id,
        version=replica.version,
        instance_id=replica.instance.id,
        request=replica.request,
        exclusive=replica.exclusive,
        gpus=replica.gpus,
        devices=replica.devices,
        stopping=replica.stopping,
        connected=connected,
        ended=ended,
    )


def _instance_fact(
    started: StartedInstance, providers: ProviderRegistry, lost: str
) -> InstanceFact:
    instance, provider = started.instance, providers.get(started.provider_id)
    devices = None
    if isinstance(provider, SharesDevices) and not lost:
        devices = provider.devices(instance.id)
    return InstanceFact(instance.id, started.nodepool, instance.shape, devices, lost)
