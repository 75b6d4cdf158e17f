"""What placement sees of a deployment's nodepools: their instances, what every deployment's
replicas use of each, their GPUs, and how many instances each may still add.

GPUs are as the instance's provider reports them where it assigns devices
(:class:`~orchard.providers.gpus.SharesDevices`, by the rules placement plans with); else the
shape's devices with what placement planned for the replicas on them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from orchard.dispatch.sessions import PoolKey
from orchard.orchestration.resources import InstanceView, NodepoolView, Resources
from orchard.orchestration.snapshot import DeploymentPlan
from orchard.orchestration.world import Replica
from orchard.providers import ProviderRegistry
from orchard.providers.base import Instance, Provider
from orchard.providers.gpus import Device, SharesDevices, devices_of, take_devices

Held = tuple[str, PoolKey, Instance]  # an instance with its provider id and nodepool


def nodepool_views(
    plan: DeploymentPlan,
    instances: Mapping[str, Held],
    replicas: Sequence[Replica],
    providers: ProviderRegistry,
    no_room: Mapping[PoolKey, float],
    now: float,
) -> list[NodepoolView]:
    """``plan``'s nodepools as placement sees them at ``now``; one in ``no_room`` until a later
    time may add no instance."""
    views = []
    for pool in plan.pools:
        mine = [
            instance_view(instance, providers.get(provider_id), replicas)
            for (provider_id, pool_key, instance) in instances.values()
            if pool_key == pool.key
        ]
        can_add = 0 if no_room.get(pool.key, 0.0) > now else max(0, pool.max_instances - len(mine))
        views.append(
            NodepoolView(
                key=(pool.key.compute_cluster_id, pool.key.nodepool_id),
                shape=pool.shape,
                priority=pool.priority,
                price=pool.price,
                capacity_type=pool.capacity_type,
                can_add=can_add,
                instances=tuple(mine),
                min_instances=pool.min_instances,
            )
        )
    return views


def instance_view(
    instance: Instance, provider: Provider | None, replicas: Sequence[Replica]
) -> InstanceView:
    """An instance as placement sees it: what the replicas of every deployment on it use."""
    held = [r for r in replicas if r.instance.id == instance.id]
    used = Resources(0.0, 0)
    for r in held:
        used += r.request
    return InstanceView(
        instance.id,
        instance.shape,
        used,
        len(held),
        exclusive=any(r.exclusive for r in held),
        devices=_devices(instance, provider, held),
    )


def _devices(
    instance: Instance, provider: Provider | None, held: list[Replica]
) -> tuple[Device, ...]:
    """The instance's GPUs with what holds them: as its provider says, where it says (it
    assigns them); else its shape's devices with the replicas placed on them."""
    if isinstance(provider, SharesDevices):
        return provider.devices(instance.id)
    shape = instance.shape
    devices = devices_of(shape.num_accelerators, shape.accelerator_memory_bytes)
    for replica in held:
        devices = take_devices(devices, replica.devices, replica.gpus)
    return devices
