"""What placement sees, for the whole round: each nodepool's instances, what every deployment's
replicas use of each (CPUs, memory, GPUs), and how many instances each may still add. Pure.

:class:`Capacity` is built from the world's facts (instances not lost, replicas not ended,
draining ones too) and then taken from, deployment after deployment, by the replicas decide
starts, so that a later deployment sees what an earlier one's new replicas took, new instances
included. A new instance is named by a placeholder (``new-1`` ...) that is unique in its
nodepool for the round.

GPUs are as the instance's provider reports them where it assigns devices
(``InstanceFact.devices``); else the shape's devices with what placement planned for the
replicas on them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from orchard.ids import PoolKey
from orchard.orchestration.placement import Placement
from orchard.orchestration.resources import InstanceView, NodepoolView, Resources
from orchard.orchestration.snapshot import DeploymentPlan
from orchard.orchestration.world import InstanceFact, ReplicaFact, World
from orchard.providers.gpus import Device, devices_of, take_devices


class Capacity:
    def __init__(self, world: World) -> None:
        live = [r for r in world.replicas if r.ended is None]
        self._instances: dict[PoolKey, tuple[InstanceView, ...]] = {}
        for fact in world.instances:
            if not fact.lost:
                on = [r for r in live if r.instance_id == fact.id]
                held = self._instances.get(fact.nodepool, ())
                self._instances[fact.nodepool] = (*held, instance_view(fact, on))
        self._no_room, self._now = world.no_room, world.now
        self._new: set[tuple[PoolKey, str]] = set()  # placeholders of instances to start

    def views(self, plan: DeploymentPlan) -> tuple[NodepoolView, ...]:
        """``plan``'s nodepools as placement sees them now; one without room until a later time
        than now may add no instance."""
        views = []
        for pool in plan.pools:
            mine = self._instances.get(pool.key, ())
            full = self._no_room.get(pool.key, 0.0) > self._now
            views.append(
                NodepoolView(
                    key=(pool.key.compute_cluster_id, pool.key.nodepool_id),
                    shape=pool.shape,
                    priority=pool.priority,
                    price=pool.price,
                    capacity_type=pool.capacity_type,
                    can_add=0 if full else max(0, pool.max_instances - len(mine)),
                    instances=mine,
                    min_instances=pool.min_instances,
                )
            )
        return tuple(views)

    def take(self, plan: DeploymentPlan, nodepools: Iterable[NodepoolView]) -> None:
        """Keep ``nodepools`` (``plan``'s, as placement left them) for the next deployments."""
        for view in nodepools:
            key = PoolKey(plan.user_id, *view.key)
            known = {i.id for i in self._instances.get(key, ())}
            self._new.update((key, i.id) for i in view.instances if i.id not in known)
            self._instances[key] = view.instances

    def on_new_instance(self, plan: DeploymentPlan, placement: Placement) -> bool:
        """Whether ``placement`` is on an instance this round starts."""
        assert placement.nodepool is not None and placement.instance_id is not None
        return (PoolKey(plan.user_id, *placement.nodepool), placement.instance_id) in self._new

    def idle(self) -> dict[str, PoolKey]:
        """The running instances no replica uses (draining ones and new ones count), by id."""
        return {
            i.id: key
            for key, instances in self._instances.items()
            for i in instances
            if not i.replicas and (key, i.id) not in self._new
        }

    def running(self) -> dict[str, PoolKey]:
        """Every running instance (not those to start), by id."""
        return {
            i.id: key
            for key, instances in self._instances.items()
            for i in instances
            if (key, i.id) not in self._new
        }


def instance_view(fact: InstanceFact, replicas: Sequence[ReplicaFact]) -> InstanceView:
    """An instance as placement sees it: what the replicas of every deployment on it use."""
    used = Resources(0.0, 0)
    for r in replicas:
        used += r.request
    return InstanceView(
        fact.id,
        fact.shape,
        used,
        len(replicas),
        exclusive=any(r.exclusive for r in replicas),
        devices=_devices(fact, replicas),
    )


def _devices(fact: InstanceFact, replicas: Sequence[ReplicaFact]) -> tuple[Device, ...]:
    """The instance's GPUs with what holds them: as its provider says, where it says (it
    assigns them); else its shape's devices with the replicas placed on them."""
    if fact.devices is not None:
        return fact.devices
    devices = devices_of(fact.shape.num_accelerators, fact.shape.accelerator_memory_bytes)
    for replica in replicas:
        devices = take_devices(devices, replica.devices, replica.gpus)
    return devices


def no_room_now(no_room: Mapping[PoolKey, float], now: float) -> dict[PoolKey, float]:
    """The nodepools still without room at ``now`` (the others are forgotten)."""
    return {key: until for key, until in no_room.items() if until > now}
