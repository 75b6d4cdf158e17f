"""The first step of a round: what the providers and the dispatcher say, read and not acted on.

:func:`observe` only reads: replica sessions and per-deployment load from the dispatcher,
lost instances and ended replicas from the providers (each says them once), and the nodepools
that the last round's apply found without room. The round then takes the observation in
(:meth:`~orchard.orchestration.reconciler.Orchestrator.round`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from orchard.dispatch.dispatcher import Dispatcher
from orchard.dispatch.sessions import PoolKey
from orchard.orchestration.snapshot import DeploymentPlan
from orchard.providers import ProviderRegistry
from orchard.providers.base import ReplicaStatus

Load = tuple[int, int]  # items in flight, calls waiting


@dataclass(frozen=True)
class Observation:
    connected: frozenset[str]  # replica ids with a stream to the server
    lost_instances: tuple[tuple[str, str], ...]  # (instance id, why) gone since the last round
    ended: tuple[ReplicaStatus, ...]  # replicas no longer running
    # Each deployment's load, or why it could not be read (that deployment's failure alone).
    load: Mapping[tuple[str, str], Load | Exception] = field(default_factory=dict)
    no_room: Mapping[PoolKey, float] = field(default_factory=dict)  # nodepool: until when


def observe(
    providers: ProviderRegistry,
    dispatcher: Dispatcher,
    plans: Sequence[DeploymentPlan],
    no_room: Mapping[PoolKey, float],
) -> Observation:
    connected = frozenset(s.hello.replica_id for s in dispatcher.sessions())
    lost = tuple(pair for provider in providers.all() for pair in provider.lost_instances())
    ended = tuple(
        status for provider in providers.all() for status in provider.poll() if not status.running
    )
    load: dict[tuple[str, str], Load | Exception] = {}
    for plan in plans:
        try:
            load[plan.key] = dispatcher.load([p.key for p in plan.pools], plan.version)
        except Exception as exc:
            load[plan.key] = exc
    return Observation(connected, lost, ended, load, dict(no_room))
