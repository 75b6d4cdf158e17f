"""Which GPUs a replica gets (pure): whole devices, shared devices, fit, order, release."""

from __future__ import annotations

import pytest

from orchard.providers.gpus import (
    Device,
    GpuNeed,
    NoDevice,
    assign_devices,
    choose_devices,
    devices_of,
    gpu_load,
    take_devices,
)

GIB = 2**30


def whole(count: int = 1, gib: float = 0) -> GpuNeed:
    return GpuNeed.of(count, int(gib * GIB), packing=False)


def share(gib: float, count: int = 1) -> GpuNeed:
    return GpuNeed.of(count, int(gib * GIB))


def free(index: int, gib: float = 80) -> Device:
    return Device(index, int(gib * GIB))


def used(index: int, gib: float, sharers: int = 1, memory: float = 80) -> Device:
    return Device(index, int(memory * GIB), int(gib * GIB), sharers)


def held(index: int, gib: float = 80) -> Device:
    return Device(index, int(gib * GIB), held=True)


def refused(devices: list[Device], need: GpuNeed) -> str:
    with pytest.raises(NoDevice) as caught:
        assign_devices(devices, need)
    return str(caught.value)


def test_a_need_is_shared_only_with_packing_and_a_stated_memory() -> None:
    assert GpuNeed.of(1, 40 * GIB) == GpuNeed(1, 40 * GIB, shared=True)
    assert not GpuNeed.of(1, 40 * GIB, packing=False).shared
    assert not GpuNeed.of(1, 0).shared
    assert not GpuNeed.of(0, 40 * GIB).shared
    assert share(40).describe() == "1 GPU with 40 GiB free"
    assert share(12.5, count=2).describe() == "2 GPUs with 12.5 GiB free each"
    assert whole().describe() == "1 whole GPU"
    assert whole(2, 40).describe() == "2 whole GPUs with at least 40 GiB each"


@pytest.mark.parametrize(
    ("devices", "need", "expected"),
    [
        ([free(0), free(1)], whole(0), ()),
        ([free(1), free(0)], whole(), (0,)),
        ([held(0), free(1)], whole(), (1,)),
        ([free(0, 40), free(1), free(2)], whole(2, 60), (1, 2)),
        # Among empty devices that fit, the smallest first: the large one stays for more.
        ([free(0, 141), free(1, 80)], whole(1, 40), (1,)),
    ],
)
def test_whole_devices(devices: list[Device], need: GpuNeed, expected: tuple[int, ...]) -> None:
    assert assign_devices(devices, need) == expected


def test_two_shared_replicas_fit_one_device_and_a_third_does_not() -> None:
    devices = devices_of(1, 80 * GIB)
    for _ in range(2):
        devices = take_devices(devices, assign_devices(devices, share(40)), share(40))
    assert devices == (used(0, 80, sharers=2),)
    assert refused(list(devices), share(1)) == (
        "1 GPU with 1 GiB free requested; GPU 0 has 0 B free (shared by 2 replicas); "
        "it fits once replicas on these GPUs end, or on another instance"
    )


def test_shared_replicas_fill_the_fullest_device_that_fits_first() -> None:
    devices = [free(0), used(1, 10), used(2, 50), used(3, 70)]
    assert assign_devices(devices, share(20)) == (2,)  # 3 has only 10 GiB free
    assert assign_devices([free(0), used(1, 30), used(2, 30)], share(20)) == (1,)  # a tie
    assert assign_devices([free(1), free(0)], share(20)) == (0,)  # nothing shared yet


def test_a_replica_is_never_placed_where_its_memory_does_not_fit() -> None:
    assert refused([used(0, 68, sharers=2)], share(40)) == (
        "1 GPU with 40 GiB free requested; GPU 0 has 12 GiB free (shared by 2 replicas); "
        "it fits once replicas on these GPUs end, or on another instance"
    )
    assert refused([free(0, 24)], share(40)) == (
        "1 GPU with 40 GiB free requested; GPU 0 has 24 GiB free; lower the model's "
        "inference_compute_info.accelerator_memory or use an instance type with larger GPUs"
    )
    assert refused([free(0, 24)], whole(1, 40)).startswith(
        "1 whole GPU with at least 40 GiB requested; GPU 0 has 24 GiB free; lower"
    )


def test_whole_replicas_never_get_a_shared_device_nor_shared_ones_a_held_device() -> None:
    assert refused([used(0, 1)], whole()) == (
        "1 whole GPU requested; GPU 0 has 79 GiB free (shared by 1 replica); "
        "it fits once replicas on these GPUs end, or on another instance"
    )
    assert assign_devices([used(0, 1), free(1)], whole()) == (1,)
    assert refused([held(0)], share(1)).startswith(
        "1 GPU with 1 GiB free requested; GPU 0 is held whole by a replica; it fits once"
    )
    assert assign_devices([held(0), free(1)], share(1)) == (1,)


def test_a_replica_of_several_gpus_takes_each_of_them() -> None:
    devices = [used(0, 60), free(1), used(2, 30), held(3)]
    assert assign_devices(devices, share(20, count=2)) == (0, 2)
    assert take_devices(devices, (0, 2), share(20, count=2)) == (
        used(0, 80, sharers=2),
        free(1),
        used(2, 50, sharers=2),
        held(3),
    )
    assert assign_devices(devices, share(30, count=2)) == (1, 2)
    assert refused(devices, whole(2)).startswith("2 whole GPUs requested; GPU 0 has 20 GiB")
    assert refused(devices[:1], share(1, count=2)) == (
        "2 GPUs with 1 GiB free each requested but the instance has 1 GPU; use an instance "
        "type with more GPUs or lower the model's inference_compute_info.num_accelerators"
    )


def test_a_device_is_free_again_once_the_replicas_on_it_are_gone() -> None:
    """What devices hold is a fold of the replicas that run: leave one out and its share is
    free."""
    empty = devices_of(2, 80 * GIB)
    running = {"a": ((0,), share(40)), "b": ((0,), share(30)), "c": ((1,), whole())}

    def ledger(names: str) -> tuple[Device, ...]:
        devices = empty
        for name in names:
            indices, need = running[name]
            devices = take_devices(devices, indices, need)
        return devices

    assert ledger("abc") == (used(0, 70, sharers=2), held(1))
    assert choose_devices(ledger("abc"), share(20)) is None
    assert choose_devices(ledger("bc"), share(20)) == (0,)  # a ended
    assert choose_devices(ledger("ab"), whole()) == (1,)  # c ended
    assert ledger("") == empty


def test_a_device_of_unknown_memory_takes_one_shared_replica() -> None:
    unknown = Device(0, 0)
    assert assign_devices([unknown], share(40)) == (0,)
    taken = unknown.take(share(40))
    assert choose_devices([taken], share(1)) is None
    assert taken.describe() == "GPU 0 is in use (shared by 1 replica)"
    assert assign_devices([unknown], whole(1, 40)) == (0,)


def test_load_is_the_share_of_the_devices_taken() -> None:
    assert gpu_load([]) == 0.0
    assert gpu_load([free(0), held(1)]) == 0.5
    assert gpu_load([used(0, 20), used(1, 60)]) == 0.5
    assert gpu_load([Device(0, 0).take(share(1))]) == 1.0
