"""Placement (pure): scheduling choices, packing, priority groups, GPUs, removals."""

from __future__ import annotations

import random

import pytest

from orchard.configs import ComputeInfoSpec
from orchard.orchestration.placement import (
    SCHEDULING_FAIL,
    SCHEDULING_NETWORK,
    SCHEDULING_PERFORMANCE,
    SCHEDULING_PREFER_ONDEMAND,
    SCHEDULING_PREFER_SPOT,
    SCHEDULING_PRICE,
    SCHEDULING_RANDOM,
    SCHEDULING_UNSET,
    SCHEDULING_UTILIZATION,
    Placement,
    Placements,
    place,
)
from orchard.orchestration.resources import CAPACITY_SPOT, InstanceView, NodepoolView, Resources
from orchard.providers.base import ComputeShape
from orchard.providers.gpus import Device

GIB = 2**30
SMALL = ComputeShape(cpus=4, memory_bytes=16 * GIB)
LARGE = ComputeShape(cpus=8, memory_bytes=32 * GIB)
GPU = ComputeShape(cpus=8, memory_bytes=64 * GIB, num_accelerators=1)
REPLICA = Resources(2, 4 * GIB)


def res(cpus: float, gib: float = 0, accelerators: int = 0) -> Resources:
    return Resources(cpus, int(gib * GIB), accelerators)


def inst(
    id: str,
    shape: ComputeShape = SMALL,
    used: Resources | None = None,
    replicas: int = 0,
    exclusive: bool = False,
    devices: tuple[Device, ...] | None = None,
) -> InstanceView:
    return InstanceView(id, shape, used or Resources(0, 0), replicas, exclusive, devices)


def pool(
    name: str,
    shape: ComputeShape = SMALL,
    *,
    priority: int = 0,
    price: float = 1.0,
    capacity_type: int = 1,
    can_add: int = 1,
    instances: tuple[InstanceView, ...] = (),
    min_instances: int = 0,
) -> NodepoolView:
    return NodepoolView(
        ("cc", name),
        shape,
        priority=priority,
        price=price,
        capacity_type=capacity_type,
        can_add=can_add,
        instances=instances,
        min_instances=min_instances,
    )


def plan(
    nodepools: list[NodepoolView],
    count: int = 1,
    request: Resources = REPLICA,
    choice: int = SCHEDULING_PERFORMANCE,
    disable_packing: bool = False,
    rng: random.Random | None = None,
) -> Placements:
    return place(
        "dep",
        request,
        count,
        nodepools,
        scheduling_choice=choice,
        disable_packing=disable_packing,
        rng=rng,
    )


def where(result: Placements) -> list[tuple[str, str | None, bool] | str]:
    """Each placement as (nodepool id, instance id, new?) or, when unplaceable, its reason."""
    out: list[tuple[str, str | None, bool] | str] = []
    for p in result.placements:
        out.append((p.nodepool[1], p.instance_id, p.new_instance) if p.nodepool else p.reason)
    return out


# -- scheduling choices --------------------------------------------------------------------


def three_pools() -> list[NodepoolView]:
    """One group, three nodepools that can each take a 2-CPU replica:

    a: small, cheapest, on-demand, its one instance 3/4 CPUs used (75%), may start one more
    b: large, spot, its one instance 2/8 CPUs and 4/32 GiB used (25%)
    c: with an accelerator, dearest, spot, its one instance 4/8 CPUs used (50%)
    """
    return [
        pool("a", SMALL, price=1.0, instances=(inst("a-1", SMALL, res(3, 4), 1),)),
        pool(
            "b",
            LARGE,
            price=3.0,
            capacity_type=CAPACITY_SPOT,
            instances=(inst("b-1", LARGE, res(2, 4), 1),),
        ),
        pool(
            "c",
            GPU,
            price=5.0,
            capacity_type=CAPACITY_SPOT,
            instances=(inst("c-1", GPU, res(4, 8), 1),),
        ),
    ]


@pytest.mark.parametrize(
    ("choice", "expected", "reason"),
    [
        (SCHEDULING_PRICE, ("a", "new-1", True), "on a new instance (new-1) of nodepool cc/a"),
        (SCHEDULING_PERFORMANCE, ("c", "c-1", False), "on instance c-1 of nodepool cc/c"),
        (SCHEDULING_NETWORK, ("c", "c-1", False), "on instance c-1 of nodepool cc/c"),
        (SCHEDULING_UNSET, ("c", "c-1", False), "on instance c-1 of nodepool cc/c"),
        (SCHEDULING_UTILIZATION, ("b", "b-1", False), "on instance b-1 of nodepool cc/b"),
        (SCHEDULING_PREFER_SPOT, ("c", "c-1", False), "on instance c-1 of nodepool cc/c"),
        (
            SCHEDULING_PREFER_ONDEMAND,
            ("a", "new-1", True),
            "on a new instance (new-1) of nodepool cc/a",
        ),
    ],
    ids=["price", "performance", "network", "unset", "utilization", "spot", "ondemand"],
)
def test_scheduling_choice_ranks_the_group(
    choice: int, expected: tuple[str, str, bool], reason: str
) -> None:
    result = plan(three_pools(), choice=choice)
    assert where(result) == [expected]
    assert result.placements[0].reason == reason


def test_performance_orders_accelerators_then_cpus_then_memory() -> None:
    more_memory = ComputeShape(cpus=8, memory_bytes=64 * GIB)
    more_cpus = ComputeShape(cpus=16, memory_bytes=16 * GIB)
    one_gpu = ComputeShape(cpus=4, memory_bytes=16 * GIB, num_accelerators=1)
    pools = [pool("mem", more_memory), pool("cpu", more_cpus), pool("small", SMALL)]
    assert where(plan(pools)) == [("cpu", "new-1", True)]
    assert where(plan([*pools, pool("gpu", one_gpu)])) == [("gpu", "new-1", True)]
    assert where(plan([pool("mem", more_memory), pool("small", LARGE)])) == [("mem", "new-1", True)]


def test_price_ties_fall_to_performance_then_key() -> None:
    pools = [pool("z", SMALL, price=2.0), pool("y", LARGE, price=2.0), pool("x", LARGE, price=2.0)]
    assert where(plan(pools, choice=SCHEDULING_PRICE)) == [("x", "new-1", True)]


def test_prefer_spot_falls_back_to_on_demand() -> None:
    pools = [
        pool("spot", LARGE, capacity_type=CAPACITY_SPOT, can_add=0),
        pool("od", SMALL),
    ]
    assert where(plan(pools, choice=SCHEDULING_PREFER_SPOT)) == [("od", "new-1", True)]
    pools[0] = pool("spot", LARGE, capacity_type=CAPACITY_SPOT)
    assert where(plan(pools, choice=SCHEDULING_PREFER_SPOT)) == [("spot", "new-1", True)]
    assert where(plan(pools, choice=SCHEDULING_PREFER_ONDEMAND)) == [("od", "new-1", True)]


def test_utilization_counts_replicas_placed_in_the_same_call() -> None:
    # Both empty: a first (ties fall to key); a's new instance is then half used, so b.
    pools = [pool("a", SMALL, can_add=2), pool("b", SMALL, can_add=2)]
    assert where(plan(pools, count=3, choice=SCHEDULING_UTILIZATION)) == [
        ("a", "new-1", True),
        ("b", "new-1", True),
        ("a", "new-1", True),
    ]


def test_random_draws_among_nodepools_that_can_take_it() -> None:
    pools = [
        *three_pools(),
        pool("full", LARGE, can_add=0, instances=(inst("f-1", LARGE, res(8, 32), 4),)),
    ]
    drawn = [
        where(plan(pools, choice=SCHEDULING_RANDOM, rng=random.Random(seed)))[0]
        for seed in range(40)
    ]
    assert {d[0] for d in drawn if isinstance(d, tuple)} == {"a", "b", "c"}
    again = [
        where(plan(pools, choice=SCHEDULING_RANDOM, rng=random.Random(seed)))[0]
        for seed in range(40)
    ]
    assert again == drawn
    # Input order does not matter: the draw is over the nodepools sorted by key.
    shuffled = list(reversed(pools))
    assert where(plan(shuffled, choice=SCHEDULING_RANDOM, rng=random.Random(7))) == where(
        plan(pools, choice=SCHEDULING_RANDOM, rng=random.Random(7))
    )


def test_random_needs_an_rng() -> None:
    with pytest.raises(ValueError, match="RANDOM needs an rng"):
        plan(three_pools(), choice=SCHEDULING_RANDOM)


def test_unknown_choice_and_negative_count_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown scheduling_choice 9; use 1-8"):
        plan(three_pools(), choice=9)
    with pytest.raises(ValueError, match="count must be 0 or more, got -1"):
        plan(three_pools(), count=-1)
    assert plan(three_pools(), count=0).placements == ()


def test_fail_refuses_ambiguity() -> None:
    result = plan([pool("a"), pool("b")], choice=SCHEDULING_FAIL)
    assert where(result) == [
        "scheduling_choice FAIL: nodepools cc/a, cc/b (priority 0) could each take a replica "
        "of deployment dep; give them different priorities in deployment_nodepools or use "
        "another scheduling_choice"
    ]
    assert not result.placements[0].placed


def test_fail_places_when_exactly_one_can_take_it() -> None:
    full = pool("a", can_add=0, instances=(inst("a-1", SMALL, res(4, 16), 2),))
    assert where(plan([full, pool("b")], choice=SCHEDULING_FAIL)) == [("b", "new-1", True)]
    # A nodepool whose type is too small does not count as a choice either.
    tiny = pool("t", ComputeShape(cpus=1, memory_bytes=2 * GIB))
    assert where(plan([tiny, pool("b")], choice=SCHEDULING_FAIL)) == [("b", "new-1", True)]


def test_fail_with_priorities_is_not_ambiguous() -> None:
    pools = [pool("a", priority=5), pool("b", priority=1), pool("c", priority=1)]
    assert where(plan(pools, choice=SCHEDULING_FAIL)) == [("a", "new-1", True)]
    # The top group is full: the next group holds two, which is ambiguous again.
    pools[0] = pool("a", priority=5, can_add=0)
    assert where(plan(pools, choice=SCHEDULING_FAIL))[0] == (
        "scheduling_choice FAIL: nodepools cc/b, cc/c (priority 1) could each take a replica "
        "of deployment dep; give them different priorities in deployment_nodepools or use "
        "another scheduling_choice"
    )


# -- priority groups -----------------------------------------------------------------------


def test_higher_priority_first_even_when_dearer() -> None:
    pools = [pool("cheap", price=0.5, priority=1), pool("dear", price=9.0, priority=7)]
    assert where(plan(pools, choice=SCHEDULING_PRICE)) == [("dear", "new-1", True)]


def test_spill_to_the_next_group_only_when_the_first_is_full() -> None:
    high = pool("high", priority=9, can_add=1, instances=(inst("h-1", SMALL, res(2, 4), 1),))
    low = pool("low", priority=1, can_add=3)
    # h-1 has room for one, high may start one instance holding two: three replicas stay
    # in the high group, the fourth and fifth spill to the low one.
    assert where(plan([low, high], count=5)) == [
        ("high", "h-1", False),
        ("high", "new-1", True),
        ("high", "new-1", True),
        ("low", "new-1", True),
        ("low", "new-1", True),
    ]


# -- packing -------------------------------------------------------------------------------


def test_packing_fills_the_fullest_instance_that_fits() -> None:
    instances = (
        inst("i-1", SMALL, res(1, 1), 1),
        inst("i-2", SMALL, res(2, 2), 1),
        inst("i-3", SMALL, res(3, 3), 1),  # 1 CPU free: too little
    )
    assert where(plan([pool("a", can_add=5, instances=instances)])) == [("a", "i-2", False)]


def test_packing_measures_fullness_by_the_scarcest_resource() -> None:
    instances = (
        inst("cpu-heavy", SMALL, res(2, 1), 1),  # 50% of CPUs
        inst("mem-heavy", SMALL, res(1, 12), 1),  # 75% of memory
    )
    assert where(plan([pool("a", instances=instances)])) == [("a", "mem-heavy", False)]


def test_packing_shares_a_new_instance_between_replicas_of_one_call() -> None:
    result = plan([pool("a", can_add=2)], count=3)
    assert where(result) == [("a", "new-1", True), ("a", "new-1", True), ("a", "new-2", True)]


def test_disable_packing_gives_each_replica_its_own_instance() -> None:
    instances = (inst("i-1", SMALL, res(1, 1), 1), inst("i-2", SMALL))
    result = plan([pool("a", can_add=2, instances=instances)], count=3, disable_packing=True)
    assert where(result) == [("a", "i-2", False), ("a", "new-1", True), ("a", "new-2", True)]
    after = {i.id: i for i in result.nodepools[0].instances}
    assert [after[i].exclusive for i in ("i-1", "i-2", "new-1", "new-2")] == [
        False,
        True,
        True,
        True,
    ]


def test_disable_packing_without_an_empty_instance_or_room() -> None:
    instances = (inst("i-1", SMALL, res(1, 1), 1),)
    result = plan([pool("a", can_add=0, instances=instances)], disable_packing=True)
    assert where(result) == [
        "no nodepool of deployment dep has room for 2 CPUs / 4 GiB: raise max_instances of "
        "nodepool cc/a or use a larger instance type (disable_packing is true: each replica "
        "needs an instance of its own)"
    ]


def test_an_exclusive_instance_takes_no_other_replica() -> None:
    exclusive = inst("x-1", LARGE, res(2, 4), 1, exclusive=True)
    shared = inst("s-1", LARGE, res(6, 4), 1)
    assert where(plan([pool("a", LARGE, instances=(exclusive, shared))])) == [("a", "s-1", False)]
    assert where(plan([pool("a", LARGE, instances=(exclusive,))])) == [("a", "new-1", True)]
    assert where(plan([pool("a", LARGE, can_add=0, instances=(exclusive,))])) == [
        "no nodepool of deployment dep has room for 2 CPUs / 4 GiB: raise max_instances of "
        "nodepool cc/a or use a larger instance type"
    ]


def test_an_exclusive_replica_placed_earlier_in_the_call_blocks_packing_later() -> None:
    first = plan([pool("a", LARGE, can_add=2)], disable_packing=True)
    assert where(first) == [("a", "new-1", True)]
    second = plan(list(first.nodepools), count=1)
    assert where(second) == [("a", "new-2", True)]


def test_placeholder_ids_skip_existing_ones() -> None:
    taken = pool("a", can_add=1, instances=(inst("new-1", SMALL, res(4, 16), 2),))
    assert where(plan([taken])) == [("a", "new-2", True)]


# -- what does not fit ---------------------------------------------------------------------


def test_a_replica_larger_than_every_instance_type() -> None:
    request = res(16, 64, 1)
    result = plan([pool("a", SMALL), pool("b", GPU)], request=request)
    assert where(result) == [
        "a replica of deployment dep needs 16 CPUs / 64 GiB / 1 accelerator, more than an "
        "empty instance of any of its nodepools holds (cc/a: 4 CPUs / 16 GiB; cc/b: 8 CPUs "
        "/ 64 GiB / 1 accelerator); use a larger instance type or lower the model's "
        "inference_compute_info"
    ]


def test_a_type_too_small_is_never_used_even_with_room() -> None:
    tiny = pool("tiny", ComputeShape(cpus=1, memory_bytes=64 * GIB), priority=9, can_add=9)
    full = pool("big", LARGE, can_add=0, instances=(inst("b-1", LARGE, res(7, 30), 3),))
    assert where(plan([tiny, full])) == [
        "no nodepool of deployment dep has room for 2 CPUs / 4 GiB: raise max_instances of "
        "nodepool cc/big or use a larger instance type"
    ]


def test_no_nodepools() -> None:
    assert where(plan([])) == [
        "deployment dep has no nodepools; list one in nodepools or deployment_nodepools"
    ]


def test_several_replicas_consume_capacity() -> None:
    a = pool("a", SMALL, can_add=1, instances=(inst("a-1", SMALL, res(2, 4), 1),))
    result = plan([a], count=4)
    assert where(result) == [
        ("a", "a-1", False),
        ("a", "new-1", True),
        ("a", "new-1", True),
        "no nodepool of deployment dep has room for 2 CPUs / 4 GiB: raise max_instances of "
        "nodepool cc/a or use a larger instance type",
    ]
    assert [p.placed for p in result.placements] == [True, True, True, False]
    assert len(result.placed) == 3 and len(result.unplaced) == 1
    (after,) = result.nodepools
    assert after.can_add == 0
    assert after.instances == (
        inst("a-1", SMALL, res(4, 8), 2),
        inst("new-1", SMALL, res(4, 8), 2),
    )


def test_accelerators_are_counted() -> None:
    held = (Device(0, 0, held=True),)
    gpu_pool = pool(
        "g", GPU, can_add=1, instances=(inst("g-1", GPU, res(1, 8, 1), 1, devices=held),)
    )
    result = plan([gpu_pool], count=2, request=res(1, 8, 1))
    assert where(result) == [
        ("g", "new-1", True),
        "no nodepool of deployment dep has room for "
        "1 CPU / 8 GiB / 1 accelerator: raise max_instances of nodepool cc/g or use a larger "
        "instance type (1 whole GPU wanted; instance g-1 of cc/g: GPU 0 is held whole by a "
        "replica; instance new-1 of cc/g: GPU 0 is held whole by a replica)",
    ]


# -- GPUs ----------------------------------------------------------------------------------

ONE_80 = ComputeShape(
    cpus=16, memory_bytes=64 * GIB, num_accelerators=1, accelerator_memory_bytes=80 * GIB
)
TWO_80 = ComputeShape(
    cpus=16, memory_bytes=64 * GIB, num_accelerators=2, accelerator_memory_bytes=80 * GIB
)


def gpu(gib: float, count: int = 1) -> Resources:
    """A replica of 1 CPU, 4 GiB and ``count`` GPUs of ``gib`` each (0: memory unknown)."""
    return Resources(1, 4 * GIB, count, int(gib * GIB))


def shared(index: int, used_gib: float, sharers: int, memory_gib: float = 80) -> Device:
    return Device(index, int(memory_gib * GIB), int(used_gib * GIB), sharers)


def devices_after(result: Placements, instance_id: str) -> tuple[Device, ...] | None:
    (after,) = result.nodepools
    return next(i.devices for i in after.instances if i.id == instance_id)


def test_with_packing_replicas_that_state_gpu_memory_share_a_device() -> None:
    result = plan([pool("g", ONE_80, can_add=2)], count=3, request=gpu(40))
    assert where(result) == [("g", "new-1", True), ("g", "new-1", True), ("g", "new-2", True)]
    assert [p.devices for p in result.placements] == [(0,), (0,), (0,)]
    assert devices_after(result, "new-1") == (shared(0, 80, 2),)
    assert devices_after(result, "new-2") == (shared(0, 40, 1),)


def test_a_replica_of_unknown_gpu_memory_holds_whole_devices() -> None:
    result = plan([pool("g", TWO_80, can_add=1)], count=3, request=gpu(0))
    assert where(result)[:2] == [("g", "new-1", True), ("g", "new-1", True)]
    assert [p.devices for p in result.placements[:2]] == [(0,), (1,)]
    assert where(result)[2] == (
        "no nodepool of deployment dep has room for 1 CPU / 4 GiB / 1 accelerator: raise "
        "max_instances of nodepool cc/g or use a larger instance type (1 whole GPU wanted; "
        "instance new-1 of cc/g: GPU 0 is held whole by a replica, GPU 1 is held whole by a "
        "replica)"
    )


def test_without_packing_a_replica_that_states_gpu_memory_shares_nothing() -> None:
    result = plan([pool("g", ONE_80, can_add=2)], count=2, request=gpu(40), disable_packing=True)
    assert where(result) == [("g", "new-1", True), ("g", "new-2", True)]
    assert devices_after(result, "new-1") == (Device(0, 80 * GIB, held=True),)
    # An instance whose device is partly taken is not empty: it takes no such replica.
    half = inst("g-1", ONE_80, res(1, 4, 1), 1, devices=(shared(0, 40, 1),))
    refused = plan(
        [pool("g", ONE_80, can_add=0, instances=(half,))], request=gpu(40), disable_packing=True
    )
    assert where(refused) == [
        "no nodepool of deployment dep has room for 1 CPU / 4 GiB / 1 accelerator with 40 GiB: "
        "raise max_instances of nodepool cc/g or use a larger instance type (disable_packing is "
        "true: each replica needs an instance of its own)"
    ]


def test_a_replica_that_does_not_fit_the_shared_device_goes_to_another_nodepool() -> None:
    busy = inst("a-1", ONE_80, res(2, 8, 2), 2, devices=(shared(0, 70, 2),))
    first = pool("a", ONE_80, priority=9, can_add=0, instances=(busy,))
    assert where(plan([first, pool("b", ONE_80, priority=1)], request=gpu(40))) == [
        ("b", "new-1", True)
    ]
    assert where(plan([first, pool("b", ONE_80, priority=1)], request=gpu(10))) == [
        ("a", "a-1", False)
    ]
    assert where(plan([first], request=gpu(40))) == [
        "no nodepool of deployment dep has room for 1 CPU / 4 GiB / 1 accelerator with 40 GiB: "
        "raise max_instances of nodepool cc/a or use a larger instance type (1 GPU with 40 GiB "
        "free wanted; instance a-1 of cc/a: GPU 0 has 10 GiB free (shared by 2 replicas))"
    ]


def test_whole_and_shared_replicas_never_take_each_others_devices() -> None:
    mixed = (shared(0, 40, 1), Device(1, 80 * GIB, held=True))
    instance = inst("g-1", TWO_80, res(2, 8, 2), 2, devices=mixed)
    nodepool = pool("g", TWO_80, can_add=0, instances=(instance,))
    assert where(plan([nodepool], request=gpu(40))) == [("g", "g-1", False)]
    assert plan([nodepool], request=gpu(40)).placements[0].devices == (0,)
    for request in (gpu(0), gpu(50)):
        (reason,) = where(plan([nodepool], request=request))
        assert isinstance(reason, str)
        assert "GPU 0 has 40 GiB free (shared by 1 replica), GPU 1 is held whole" in reason


def test_gpu_packing_fills_the_fullest_device_that_fits() -> None:
    quarter = inst("i-1", ONE_80, res(1, 4, 1), 1, devices=(shared(0, 20, 1),))
    most = inst("i-2", ONE_80, res(1, 4, 1), 1, devices=(shared(0, 50, 1),))
    too_full = inst("i-3", ONE_80, res(1, 4, 1), 1, devices=(shared(0, 70, 1),))
    nodepool = pool("g", ONE_80, instances=(quarter, most, too_full))
    assert where(plan([nodepool], request=gpu(20))) == [("g", "i-2", False)]
    # Inside an instance: the shared device before the empty one, and the fuller of two.
    two = inst("t-1", TWO_80, res(2, 8, 2), 2, devices=(Device(0, 80 * GIB), shared(1, 10, 1)))
    assert plan([pool("t", TWO_80, instances=(two,))], request=gpu(20)).placements[0].devices == (
        1,
    )
    three = (shared(0, 10, 1), shared(1, 50, 1))
    fuller = inst("t-1", TWO_80, res(2, 8, 2), 2, devices=three)
    assert plan([pool("t", TWO_80, instances=(fuller,))], request=gpu(20)).placements[
        0
    ].devices == (1,)


def test_a_replica_of_several_gpus_shares_each_of_them() -> None:
    result = plan([pool("g", TWO_80, can_add=2)], count=3, request=gpu(30, count=2))
    assert where(result) == [("g", "new-1", True), ("g", "new-1", True), ("g", "new-2", True)]
    assert [p.devices for p in result.placements] == [(0, 1)] * 3
    assert devices_after(result, "new-1") == (shared(0, 60, 2), shared(1, 60, 2))


def test_a_gpu_smaller_than_the_replica_asks_is_never_used() -> None:
    result = plan([pool("g", ONE_80, can_add=5)], request=gpu(100))
    assert where(result) == [
        "a replica of deployment dep needs 1 CPU / 4 GiB / 1 accelerator with 100 GiB, more "
        "than an empty instance of any of its nodepools holds (cc/g: 16 CPUs / 64 GiB / 1 "
        "accelerator with 80 GiB); use a larger instance type or lower the model's "
        "inference_compute_info"
    ]


def test_a_type_that_does_not_state_gpu_memory_plans_one_shared_replica_per_device() -> None:
    unknown = ComputeShape(cpus=16, memory_bytes=64 * GIB, num_accelerators=1)
    result = plan([pool("g", unknown, can_add=2)], count=2, request=gpu(40))
    assert where(result) == [("g", "new-1", True), ("g", "new-2", True)]
    # Once the provider says what the device has, it is shared.
    known = inst("g-1", unknown, res(1, 4, 1), 1, devices=(shared(0, 40, 1),))
    assert where(plan([pool("g", unknown, instances=(known,))], request=gpu(40))) == [
        ("g", "g-1", False)
    ]


def test_utilization_and_fullness_count_gpus_by_the_share_taken() -> None:
    half = inst("g-1", ONE_80, res(1, 4, 1), 1, devices=(shared(0, 40, 1),))
    assert half.fullness == 0.5
    assert pool("g", ONE_80, instances=(half, inst("g-2", ONE_80))).utilization == 0.25


# -- resources -----------------------------------------------------------------------------


def test_resources_from_compute_info_prefer_requests() -> None:
    limits = ComputeInfoSpec(cpu_limit="2", cpu_memory="3Gi", num_accelerators=1)
    assert Resources.from_compute_info(limits) == Resources(2.0, 3 * GIB, 1)
    gpu_memory = ComputeInfoSpec(cpu_limit="2", num_accelerators=1, accelerator_memory="40Gi")
    assert Resources.from_compute_info(gpu_memory) == Resources(2.0, 0, 1, 40 * GIB)
    requests = ComputeInfoSpec(
        cpu_limit="2", cpu_memory="3Gi", cpu_requests="500m", cpu_memory_requests="512Mi"
    )
    assert Resources.from_compute_info(requests) == Resources(0.5, 512 * 2**20, 0)
    assert Resources.from_compute_info(ComputeInfoSpec()) == Resources(0.0, 0, 0)


def test_resources_describe() -> None:
    assert Resources(1, GIB // 2).describe() == "1 CPU / 0.5 GiB"
    assert Resources(0.5, 1536 * 2**20, 2).describe() == "0.5 CPUs / 1.5 GiB / 2 accelerators"
    assert Resources(2, 100 * 2**20).describe() == "2 CPUs / 100 MiB"
    assert Resources(2, 1000).describe() == "2 CPUs / 1000 bytes"
    assert (
        Resources(1, GIB, 2, 40 * GIB).describe()
        == "1 CPU / 1 GiB / 2 accelerators with 40 GiB each"
    )


def test_fractional_cpus_fit_exactly() -> None:
    shape = ComputeShape(cpus=0.3, memory_bytes=GIB)
    result = plan([pool("a", shape, can_add=1)], count=4, request=res(0.1, 0.25))
    assert where(result)[:3] == [("a", "new-1", True)] * 3
    assert isinstance(where(result)[3], str)


# -- removals ------------------------------------------------------------------------------


def test_placement_is_a_value() -> None:
    p = Placement(("cc", "a"), "new-1", True, "on a new instance (new-1) of nodepool cc/a")
    assert p.placed
    assert not Placement(None, None, False, "why").placed
