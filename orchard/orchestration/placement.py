"""Placement: where a deployment's new replicas go, and which go when it scales down. Pure.

The caller describes each nodepool the deployment may use (``NodepoolView``: priority, the
shape and price of its instance type, spot or on-demand, how many more instances it may
start, its instances with what they already hold: CPUs and memory, and each GPU with what
holds it) and what one replica requests (``Resources``, with its accelerators' count and
memory). ``place`` answers, for each replica to add, "on existing instance X of
nodepool N", "on a new instance of nodepool N" or "unplaceable, because ..., fix: ...".
Which replicas go when it scales down is :mod:`~orchard.orchestration.removal`'s.

Placement policy, replica by replica (each one sees the capacity the earlier ones took):

1. A nodepool whose instance type cannot hold one replica even when empty (its CPUs, memory,
   number of GPUs or, where the type states it, GPU memory) is never used.
2. A nodepool *can take* the replica when one of its instances has room for it (see
   packing below) or it may start another instance.
3. Priority groups: nodepools are grouped by ``deployment_nodepools`` priority, higher
   first. The replica goes to the first group in which some nodepool can take it; it spills
   to a lower group only when no nodepool of the higher one can.
4. Within that group the deployment's ``scheduling_choice`` picks the nodepool:

   - PRICE (3): the cheapest instance type first.
   - PERFORMANCE (4, also 0/unset): the largest instance type first: most accelerators,
     then most CPUs, then most memory.
   - NETWORK (5): Orchard has no measure of network distance between a client and a
     nodepool, so this is PERFORMANCE.
   - UTILIZATION (6): the least used nodepool first: the largest fraction of any resource
     (CPUs, memory, accelerators) in use over its current instances; a nodepool without
     instances counts as unused.
   - PREFER_SPOT (7): spot (capacity type 2) nodepools first; PREFER_ONDEMAND (8):
     on-demand (1) first.
   - RANDOM (2): any nodepool of the group that can take the replica, drawn from the
     ``random.Random`` the caller passes (so a seed makes it repeatable).
   - FAIL (1): "fail if there is any ambiguity": the replica is placed only when exactly one
     nodepool of the group can take it; when several can it is unplaceable, and the reason
     says to give them different priorities or to choose another scheduling choice.

   Ties in any ranking fall to PERFORMANCE order, then to the nodepool key, so the answer
   never depends on the order of the input.
5. Inside the chosen nodepool, packing decides the instance. With packing (the default,
   ``disable_packing: false``) an existing instance with room is filled before a new one is
   started, and among those the fullest that still fits wins (bin packing: it keeps other
   instances empty so they can be released). An instance holding a replica of a deployment
   that disabled packing (``InstanceView.exclusive``) takes no other replica. With
   ``disable_packing: true`` each replica gets an instance of its own: an existing empty one
   if there is one, else a new one; that instance then counts as exclusive.
6. GPUs. An instance has room for a replica only when its devices can be assigned to it by
   the rules of :mod:`orchard.providers.gpus`, the ones the provider assigns by: with packing,
   a replica that states ``accelerator_memory`` takes that much of each of its devices and
   shares them with others like it while their memory together fits (the fullest device that
   fits first); a replica whose memory is unknown, or whose deployment disables packing, holds
   its devices whole and gets only devices nothing holds. An instance's fullness counts its
   GPUs by the share of them taken. Each placement names the devices planned
   (``Placement.devices``).

New instances started by one call get placeholder ids ``new-1``, ``new-2`` ... per nodepool
(skipping ids its instances already have). Every placement on such an instance has
``Placement.new_instance`` true; replicas that share a placeholder share the instance.

Caveats. A nodepool has one instance type (``NodepoolView.shape``); the provider's room is
the caller's business (it lowers ``can_add``). Accelerator type is not checked (the
nodepool's type names what its instances have). The GPUs of an existing instance are what the
caller says (``InstanceView.devices``, from the provider where it reports them); a new
instance's are its type's, so when the type does not state ``accelerator_memory`` each of its
devices is planned to take one shared replica, and more once the provider reports the real
memory. Scale-down leaves the GPUs of the instances as they were (which devices a replica held
is the provider's). Price is the instance type's price, not a replica's share of it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from orchard.orchestration.resources import (
    CAPACITY_ON_DEMAND,
    CAPACITY_SPOT,
    InstanceView,
    NodepoolKey,
    NodepoolView,
    Resources,
)
from orchard.providers.base import ComputeShape
from orchard.providers.gpus import (
    GpuNeed,
    describe_devices,
)

SCHEDULING_UNSET = 0
SCHEDULING_FAIL = 1
SCHEDULING_RANDOM = 2
SCHEDULING_PRICE = 3
SCHEDULING_PERFORMANCE = 4
SCHEDULING_NETWORK = 5
SCHEDULING_UTILIZATION = 6
SCHEDULING_PREFER_SPOT = 7
SCHEDULING_PREFER_ONDEMAND = 8


@dataclass(frozen=True)
class Placement:
    """Where one replica goes. ``nodepool`` None: unplaceable, and ``reason`` says why."""

    nodepool: NodepoolKey | None
    instance_id: str | None
    new_instance: bool
    reason: str
    devices: tuple[int, ...] = ()  # the instance's GPUs it is planned to get

    @property
    def placed(self) -> bool:
        return self.nodepool is not None


@dataclass(frozen=True)
class Placements:
    placements: tuple[Placement, ...]  # one per replica asked for, in order
    nodepools: tuple[NodepoolView, ...]  # the input views with this plan applied

    @property
    def placed(self) -> tuple[Placement, ...]:
        return tuple(p for p in self.placements if p.placed)

    @property
    def unplaced(self) -> tuple[Placement, ...]:
        return tuple(p for p in self.placements if not p.placed)


def _performance(np: NodepoolView) -> tuple[int, float, int]:
    return (-np.shape.num_accelerators, -np.shape.cpus, -np.shape.memory_bytes)


_RANKINGS: dict[int, Callable[[NodepoolView], tuple[object, ...]]] = {
    SCHEDULING_PRICE: lambda np: (np.price, *_performance(np), np.key),
    SCHEDULING_PERFORMANCE: lambda np: (*_performance(np), np.key),
    SCHEDULING_NETWORK: lambda np: (*_performance(np), np.key),
    SCHEDULING_UNSET: lambda np: (*_performance(np), np.key),
    SCHEDULING_UTILIZATION: lambda np: (np.utilization, *_performance(np), np.key),
    SCHEDULING_PREFER_SPOT: lambda np: (
        np.capacity_type != CAPACITY_SPOT,
        *_performance(np),
        np.key,
    ),
    SCHEDULING_PREFER_ONDEMAND: lambda np: (
        np.capacity_type != CAPACITY_ON_DEMAND,
        *_performance(np),
        np.key,
    ),
}


def _open(instance: InstanceView, disable_packing: bool) -> bool:
    """Whether ``instance`` may take another replica of the deployment at all."""
    return not instance.exclusive and not (disable_packing and instance.replicas)


def _slot(
    np: NodepoolView, request: Resources, need: GpuNeed, disable_packing: bool
) -> tuple[InstanceView, tuple[int, ...]] | None:
    """The existing instance of ``np`` the replica would go to, if any, with its devices."""
    rooms = []
    for instance in np.instances:
        devices = instance.room(request, need) if _open(instance, disable_packing) else None
        if devices is not None:
            rooms.append((instance, devices))
    if disable_packing:
        return min(rooms, key=lambda room: room[0].id, default=None)
    return min(rooms, key=lambda room: (-room[0].fullness, room[0].id), default=None)


def _type_holds(shape: ComputeShape, request: Resources, need: GpuNeed) -> bool:
    """Whether an empty instance of ``shape`` holds one replica."""
    return InstanceView("", shape).room(request, need) is not None


def _can_take(np: NodepoolView, request: Resources, need: GpuNeed, disable_packing: bool) -> bool:
    if not _type_holds(np.shape, request, need):
        return False
    return np.can_add > 0 or _slot(np, request, need, disable_packing) is not None


def _names(nodepools: Sequence[NodepoolView]) -> str:
    return ", ".join(np.name for np in sorted(nodepools, key=lambda np: np.key))


def _short_of_gpus(
    instance: InstanceView, request: Resources, need: GpuNeed, disable_packing: bool
) -> bool:
    """Whether ``instance`` would take the replica but for its GPUs."""
    return (
        need.count > 0
        and _open(instance, disable_packing)
        and request.host().fits_in(instance.free)
        and instance.room(request, need) is None
    )


def _gpu_facts(
    nodepools: Sequence[NodepoolView], request: Resources, need: GpuNeed, disable_packing: bool
) -> str:
    """What the GPUs hold on the instances that had room but for them (the first three)."""
    facts = [
        f"instance {instance.id} of {np.name}: {describe_devices(instance.gpus)}"
        for np in sorted(nodepools, key=lambda np: np.key)
        for instance in sorted(np.instances, key=lambda i: i.id)
        if _short_of_gpus(instance, request, need, disable_packing)
    ]
    if not facts:
        return ""
    more = f" and {len(facts) - 3} more" if len(facts) > 3 else ""
    return f" ({need.describe()} wanted; {'; '.join(facts[:3])}{more})"


def _unplaceable(
    deployment_id: str,
    request: Resources,
    need: GpuNeed,
    nodepools: Sequence[NodepoolView],
    disable_packing: bool,
) -> Placement:
    if not nodepools:
        why = (
            f"deployment {deployment_id} has no nodepools; "
            "list one in nodepools or deployment_nodepools"
        )
        return Placement(None, None, False, why)
    large_enough = [np for np in nodepools if _type_holds(np.shape, request, need)]
    if not large_enough:
        shapes = "; ".join(
            f"{np.name}: {Resources.of_shape(np.shape).describe()}"
            for np in sorted(nodepools, key=lambda np: np.key)
        )
        why = (
            f"a replica of deployment {deployment_id} needs {request.describe()}, more than "
            f"an empty instance of any of its nodepools holds ({shapes}); use a larger "
            "instance type or lower the model's inference_compute_info"
        )
        return Placement(None, None, False, why)
    plural = "s" if len(large_enough) > 1 else ""
    why = (
        f"no nodepool of deployment {deployment_id} has room for {request.describe()}: raise "
        f"max_instances of nodepool{plural} {_names(large_enough)} or use a larger instance type"
    )
    why += _gpu_facts(large_enough, request, need, disable_packing)
    if disable_packing:
        why += " (disable_packing is true: each replica needs an instance of its own)"
    return Placement(None, None, False, why)


def _on(
    np: NodepoolView, instance_id: str, started: Sequence[str], devices: tuple[int, ...]
) -> Placement:
    if instance_id in started:
        reason = f"on a new instance ({instance_id}) of nodepool {np.name}"
        return Placement(np.key, instance_id, True, reason, devices)
    reason = f"on instance {instance_id} of nodepool {np.name}"
    return Placement(np.key, instance_id, False, reason, devices)


@dataclass(frozen=True)
class _Ask:
    """One call of :func:`place`: the deployment and what each of its new replicas needs."""

    deployment_id: str
    request: Resources
    need: GpuNeed
    scheduling_choice: int
    disable_packing: bool
    rng: random.Random | None


def _choose(ask: _Ask, pools: Sequence[NodepoolView]) -> NodepoolView | Placement:
    """The nodepool the next replica goes to, or the placement that says why none."""
    for priority in sorted({np.priority for np in pools}, reverse=True):
        group = sorted((np for np in pools if np.priority == priority), key=lambda np: np.key)
        fitting = [np for np in group if _can_take(np, ask.request, ask.need, ask.disable_packing)]
        if not fitting:
            continue
        if ask.scheduling_choice == SCHEDULING_FAIL:
            if len(fitting) == 1:
                return fitting[0]
            why = (
                f"scheduling_choice FAIL: nodepools {_names(fitting)} (priority "
                f"{priority}) could each take a replica of deployment {ask.deployment_id}; "
                "give them different priorities in deployment_nodepools or use "
                "another scheduling_choice"
            )
            return Placement(None, None, False, why)
        if ask.scheduling_choice == SCHEDULING_RANDOM:
            assert ask.rng is not None
            return ask.rng.choice(fitting)
        return min(fitting, key=_RANKINGS[ask.scheduling_choice])
    return _unplaceable(ask.deployment_id, ask.request, ask.need, pools, ask.disable_packing)


def _put(ask: _Ask, np: NodepoolView, started: list[str]) -> tuple[NodepoolView, Placement]:
    """Place one replica in ``np`` (on an instance with room, else on a new one): the nodepool
    with it taken, and the placement. ``started`` (the placeholders of ``np`` started by this
    call) grows by the new instance's."""
    slot = _slot(np, ask.request, ask.need, ask.disable_packing)
    if slot is None:
        return _put_new(ask, np, started)
    instance, devices = slot
    taken = instance.taken(ask.request, ask.need, devices, ask.disable_packing)
    instances = tuple(taken if i.id == instance.id else i for i in np.instances)
    return replace(np, instances=instances), _on(np, instance.id, started, devices)


def _put_new(ask: _Ask, np: NodepoolView, started: list[str]) -> tuple[NodepoolView, Placement]:
    ids = {i.id for i in np.instances}
    number = len(started) + 1
    while f"new-{number}" in ids:
        number += 1
    started.append(f"new-{number}")
    fresh = InstanceView(started[-1], np.shape)
    devices = fresh.room(ask.request, ask.need)
    assert devices is not None  # _can_take saw that an empty instance of the type holds one
    new = fresh.taken(ask.request, ask.need, devices, ask.disable_packing)
    taken = replace(np, can_add=np.can_add - 1, instances=(*np.instances, new))
    return taken, _on(np, new.id, started, devices)


def place(
    deployment_id: str,
    request: Resources,
    count: int,
    nodepools: Sequence[NodepoolView],
    *,
    scheduling_choice: int,
    disable_packing: bool,
    rng: random.Random | None = None,
) -> Placements:
    """Where ``count`` new replicas of the deployment go; see the module docstring."""
    if count < 0:
        raise ValueError(f"count must be 0 or more, got {count}")
    if not SCHEDULING_UNSET <= scheduling_choice <= SCHEDULING_PREFER_ONDEMAND:
        raise ValueError(f"unknown scheduling_choice {scheduling_choice}; use 1-8")
    if scheduling_choice == SCHEDULING_RANDOM and rng is None:
        raise ValueError("scheduling_choice RANDOM needs an rng (random.Random)")
    ask = _Ask(
        deployment_id,
        request,
        request.gpus(packing=not disable_packing),
        scheduling_choice,
        disable_packing,
        rng,
    )
    pools: dict[NodepoolKey, NodepoolView] = {np.key: np for np in nodepools}
    started: dict[NodepoolKey, list[str]] = {}  # placeholder ids of the instances to start
    placements: list[Placement] = []
    for _ in range(count):
        chosen = _choose(ask, list(pools.values()))
        if isinstance(chosen, Placement):
            placements.append(chosen)
            continue
        pools[chosen.key], placement = _put(ask, chosen, started.setdefault(chosen.key, []))
        placements.append(placement)
    return Placements(tuple(placements), tuple(pools.values()))


# -- scaling down ----------------------------------------------------------------------------
