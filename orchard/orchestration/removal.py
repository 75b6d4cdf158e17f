"""Scale-down: which of a deployment's replicas go, and which idle instances are released.
Pure.

``choose_removals``: replicas in the lowest-priority nodepool go first (a replica in a nodepool
the deployment no longer lists goes before any other), then the replica on the least used
instance (so instances empty out and can be released), ties broken by nodepool key, instance id
and replica id.

``spare_instances``: an instance that holds no replica (of any deployment; a draining one still
counts) is released, lowest ids first, as long as its nodepool keeps ``min_instances``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from orchard.orchestration.resources import InstanceView, NodepoolKey, NodepoolView, Resources

K = TypeVar("K")  # a nodepool's key


@dataclass(frozen=True)
class PlacedReplica:
    """A running replica of the deployment and where it is."""

    id: str
    nodepool: NodepoolKey
    instance_id: str


@dataclass(frozen=True)
class InstanceRef:
    nodepool: NodepoolKey
    instance_id: str


def choose_removals(
    count: int,
    replicas: Sequence[PlacedReplica],
    nodepools: Sequence[NodepoolView],
    request: Resources,
) -> tuple[str, ...]:
    """The ids of the ``count`` replicas to stop, in order; see the module docstring.
    ``request`` is what one replica of the deployment uses."""
    if count < 0:
        raise ValueError(f"count must be 0 or more, got {count}")
    pools = {np.key: np for np in nodepools}
    instances: dict[InstanceRef, InstanceView] = {
        InstanceRef(np.key, i.id): i for np in nodepools for i in np.instances
    }
    remaining = list(replicas)
    removed: list[str] = []

    def rank(replica: PlacedReplica) -> tuple[object, ...]:
        pool = pools.get(replica.nodepool)
        instance = instances.get(InstanceRef(replica.nodepool, replica.instance_id))
        return (
            pool.priority if pool is not None else -1,
            instance.fullness if instance is not None else 0.0,
            instance.replicas if instance is not None else 0,
            replica.nodepool,
            replica.instance_id,
            replica.id,
        )

    for _ in range(min(count, len(remaining))):
        victim = min(remaining, key=rank)
        remaining.remove(victim)
        removed.append(victim.id)
        ref = InstanceRef(victim.nodepool, victim.instance_id)
        instance = instances.get(ref)
        if instance is not None:
            left = max(0, instance.replicas - 1)
            instances[ref] = replace(
                instance,
                used=instance.used - request,
                replicas=left,
                exclusive=instance.exclusive and left > 0,
            )
    return tuple(removed)


def spare_instances(
    instances: Mapping[str, K],
    used: Collection[str],
    keep: Mapping[K, int],
) -> list[str]:
    """The instances to release: of each nodepool's (``instances``: id to nodepool), those no
    replica uses, lowest ids first, while the nodepool keeps ``keep`` instances (0 if absent)."""
    by_pool: dict[K, list[str]] = {}
    for instance_id, pool in instances.items():
        by_pool.setdefault(pool, []).append(instance_id)
    spare: list[str] = []
    for pool, ids in by_pool.items():
        idle = sorted(i for i in ids if i not in used)
        spare.extend(idle[: max(0, len(ids) - keep.get(pool, 0))])
    return spare
