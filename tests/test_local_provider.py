"""The local provider's orchestration half: instances as envelopes of this host, replicas as
processes held to them. Replicas here are tiny real processes (``python -c``), so what is
checked is what the kernel sees: affinity, environment, signals, exit codes."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchard.providers.base import ComputeShape, NoCapacity, ReplicaLaunch, ReplicaStatus
from orchard.providers.gpus import Device, GpuNeed
from orchard.providers.inventory import Gpu, HostInventory
from orchard.providers.local import LocalProvider
from tests.waiting import wait_for

GIB = 2**30
HOST = HostInventory(
    cpus=2,
    memory_bytes=8 * GIB,
    gpus=(Gpu(0, "NVIDIA H200", 140 * GIB), Gpu(1, "NVIDIA H200", 140 * GIB)),
)


@pytest.fixture
def provider() -> Iterator[LocalProvider]:
    local = LocalProvider(HOST)
    yield local
    local.shutdown(grace=1.0)


def launch(
    tmp_path: Path,
    instance_id: str,
    code: str,
    memory: int = GIB,
    accelerators: int = 0,
    accelerator_memory_bytes: int = 0,
    packing: bool = True,
) -> ReplicaLaunch:
    """A replica running ``code``, with the GPU need its deployment (``packing``) gives it."""
    gpus = GpuNeed.of(accelerators, accelerator_memory_bytes, packing)
    replica_id = f"r-{instance_id}-{abs(hash((code, gpus))) % 10_000}"
    return ReplicaLaunch(
        id=replica_id,
        instance_id=instance_id,
        argv=(sys.executable, "-c", code),
        env=dict(os.environ),
        memory_bytes=memory,
        log_path=tmp_path / "logs" / f"{replica_id}.log",
        gpus=gpus,
    )


def gpu_launch(
    tmp_path: Path, instance_id: str, n: int = 0, *, gib: int = 40, packing: bool = True
) -> ReplicaLaunch:
    """The ``n``-th replica that stays up asking one GPU with ``gib`` GiB (shared unless its
    deployment disables packing)."""
    return launch(
        tmp_path,
        instance_id,
        STAY + " " * n,  # a distinct command, so a distinct replica id
        accelerators=1,
        accelerator_memory_bytes=gib * GIB,
        packing=packing,
    )


def two_gpu_instance(provider: LocalProvider) -> str:
    shape = ComputeShape(cpus=1, memory_bytes=GIB, num_accelerators=2)
    return provider.start_instance("u/cc/g", shape).id


def ended(provider: LocalProvider, replica_id: str) -> ReplicaStatus | None:
    """The replica's final status once it ended (``poll`` reports an ending once, so what one
    call reports is kept for the others)."""
    exits: dict[str, ReplicaStatus] = provider.__dict__.setdefault("_test_exits", {})
    for status in provider.poll():
        if not status.running:
            exits[status.id] = status
    return exits.get(replica_id)


def test_instances_hold_distinct_cpus_and_run_out(provider: LocalProvider) -> None:
    one = provider.start_instance("u/cc/a", ComputeShape(cpus=1, memory_bytes=GIB))
    two = provider.start_instance("u/cc/b", ComputeShape(cpus=0.5, memory_bytes=GIB))
    assert {one.where, two.where} == {"CPUs 0", "CPUs 1"}
    with pytest.raises(NoCapacity, match=r"0 free CPU\(s\).*held by instances of u/cc/a, u/cc/b"):
        provider.start_instance("u/cc/a", ComputeShape(cpus=1, memory_bytes=GIB))
    provider.stop_instance(one.id)
    provider.stop_instance(one.id)  # idempotent
    assert provider.start_instance("u/cc/a", ComputeShape(cpus=1, memory_bytes=GIB)).id


def test_memory_and_gpus_are_not_promised_twice(provider: LocalProvider) -> None:
    provider.start_instance("u/cc/a", ComputeShape(cpus=1, memory_bytes=6 * GIB))
    with pytest.raises(NoCapacity, match=r"2\.0 GiB of memory free"):
        provider.start_instance("u/cc/b", ComputeShape(cpus=1, memory_bytes=4 * GIB))
    gpu = ComputeShape(
        cpus=1, memory_bytes=GIB, num_accelerators=2, accelerator_types=("NVIDIA-*",)
    )
    assert "GPUs 0,1" in provider.start_instance("u/cc/g", gpu).where


SHOW = "import os; print(sorted(os.sched_getaffinity(0)), repr(os.environ['CUDA_VISIBLE_DEVICES']))"
STAY = SHOW[:-1] + ", flush=True); import time; time.sleep(60)"  # shows, then keeps its GPUs


def line_of(replica: ReplicaLaunch) -> str:
    """The line a replica printed, once it is whole."""

    def whole_line() -> str:
        text = replica.log_path.read_text() if replica.log_path.exists() else ""
        return text.strip() if text.endswith("\n") else ""

    return wait_for(whole_line, timeout=30, what=f"the line of {replica.id}")


def test_a_replica_runs_on_its_instance_cpus_and_gets_whole_gpus(
    provider: LocalProvider, tmp_path: Path
) -> None:
    shape = ComputeShape(cpus=1, memory_bytes=GIB, num_accelerators=2)
    instance = provider.start_instance("u/cc/g", shape)
    first = launch(tmp_path, instance.id, STAY, accelerators=1)
    second = launch(tmp_path, instance.id, SHOW, accelerators=1)
    cpu_only = launch(tmp_path, instance.id, SHOW)
    for replica in (first, second, cpu_only):
        provider.start_replica(replica)
    with pytest.raises(NoCapacity, match=r"1 whole GPU requested; GPU 0 is held whole by a rep"):
        provider.start_replica(launch(tmp_path, instance.id, "pass", accelerators=1))
    for replica in (second, cpu_only):
        status = wait_for(lambda r=replica: ended(provider, r.id), timeout=30, what="an exit")
        assert status.exit_code == 0
    assert second.log_path.read_text().strip() == "[0] '1'"  # device 0 is the first's
    assert cpu_only.log_path.read_text().strip() == "[0] ''"  # no GPU for a CPU-only replica
    assert line_of(first) == "[0] '0'"
    # the second's device is free again once it exited
    again = launch(tmp_path, instance.id, SHOW + " ", accelerators=1)
    provider.start_replica(again)
    wait_for(lambda: ended(provider, again.id), timeout=30, what="an exit")
    assert again.log_path.read_text().strip() == "[0] '1'"


def test_a_replica_never_gets_a_gpu_it_does_not_fit(
    provider: LocalProvider, tmp_path: Path
) -> None:
    instance = provider.start_instance(
        "u/cc/g", ComputeShape(cpus=1, memory_bytes=GIB, num_accelerators=1)
    )
    huge = launch(tmp_path, instance.id, "pass", accelerators=1, accelerator_memory_bytes=200 * GIB)
    with pytest.raises(NoCapacity) as refused:
        provider.start_replica(huge)
    assert str(refused.value) == (
        f"instance {instance.id}: 1 GPU with 200 GiB free requested; GPU 0 has 140 GiB free; "
        "lower the model's inference_compute_info.accelerator_memory or use an instance type "
        "with larger GPUs"
    )


def test_replicas_that_state_gpu_memory_share_a_device_and_a_whole_one_gets_another(
    provider: LocalProvider, tmp_path: Path
) -> None:
    instance = two_gpu_instance(provider)
    first, second, third = (gpu_launch(tmp_path, instance, n) for n in range(3))
    whole = launch(tmp_path, instance, STAY, accelerators=1)
    for replica in (first, second, whole):
        provider.start_replica(replica)
    assert [line_of(r) for r in (first, second, whole)] == ["[0] '0'", "[0] '0'", "[0] '1'"]
    assert provider.devices(instance) == (
        Device(0, 140 * GIB, 80 * GIB, sharers=2),
        Device(1, 140 * GIB, held=True),
    )
    big = launch(tmp_path, instance, "pass", accelerators=1, accelerator_memory_bytes=70 * GIB)
    with pytest.raises(NoCapacity) as refused:
        provider.start_replica(big)
    assert str(refused.value) == (
        f"instance {instance}: 1 GPU with 70 GiB free requested; GPU 0 has 60 GiB free "
        "(shared by 2 replicas), GPU 1 is held whole by a replica; it fits once replicas on "
        "these GPUs end, or on another instance"
    )
    provider.stop_replica(first.id, grace=5.0)
    wait_for(lambda: ended(provider, first.id), timeout=30, what="the first's exit")
    assert provider.devices(instance)[0] == Device(0, 140 * GIB, 40 * GIB, sharers=1)
    provider.start_replica(third)  # the first's share is free again
    assert line_of(third) == "[0] '0'"


def test_a_replica_whose_deployment_disables_packing_holds_a_device_of_its_own(
    provider: LocalProvider, tmp_path: Path
) -> None:
    instance = two_gpu_instance(provider)
    shared, alone, later = (gpu_launch(tmp_path, instance, n, packing=n != 1) for n in range(3))
    for replica in (shared, alone):
        provider.start_replica(replica)
    # the shared device has room for it, yet it gets the empty one
    assert [line_of(r) for r in (shared, alone)] == ["[0] '0'", "[0] '1'"]
    assert provider.devices(instance) == (
        Device(0, 140 * GIB, 40 * GIB, sharers=1),
        Device(1, 140 * GIB, held=True),
    )
    another = gpu_launch(tmp_path, instance, 3, packing=False)
    with pytest.raises(NoCapacity) as refused:
        provider.start_replica(another)
    assert str(refused.value) == (
        f"instance {instance}: 1 whole GPU with at least 40 GiB requested; GPU 0 has 100 GiB "
        "free (shared by 1 replica), GPU 1 is held whole by a replica; it fits once replicas on "
        "these GPUs end, or on another instance"
    )
    provider.start_replica(later)  # a shared replica never goes on the device held whole
    assert line_of(later) == "[0] '0'"


def test_a_replica_on_no_instance_is_refused(provider: LocalProvider, tmp_path: Path) -> None:
    with pytest.raises(NoCapacity, match="not running"):
        provider.start_replica(launch(tmp_path, "local-99", "pass"))


def test_stop_drains_then_kills_after_the_grace(provider: LocalProvider, tmp_path: Path) -> None:
    instance = provider.start_instance("u/cc/a", ComputeShape(cpus=1, memory_bytes=GIB))
    stubborn = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: print('draining', flush=True))\n"
        "print('up', flush=True)\n"
        "while True: time.sleep(0.05)\n"
    )
    replica = launch(tmp_path, instance.id, stubborn)
    provider.start_replica(replica)
    wait_for(
        lambda: replica.log_path.exists() and "up" in replica.log_path.read_text(),
        timeout=30,
        what="the replica to start",
    )
    provider.stop_replica(replica.id, grace=0.5)
    provider.stop_replica(replica.id, grace=0.5)  # idempotent
    status = wait_for(lambda: ended(provider, replica.id), timeout=30, what="the kill")
    assert status.exit_code == -9
    assert "did not drain within its grace" in status.reason
    assert "draining" in replica.log_path.read_text()
    provider.stop_replica(replica.id, grace=0.5)  # forgotten: still a no-op


def test_a_replica_over_its_memory_is_killed_with_the_reason(
    provider: LocalProvider, tmp_path: Path
) -> None:
    instance = provider.start_instance("u/cc/a", ComputeShape(cpus=1, memory_bytes=GIB))
    hog = "import time\nblock = bytearray(300 * 2**20)\nprint('held', flush=True)\ntime.sleep(60)"
    replica = launch(tmp_path, instance.id, hog, memory=100 * 2**20)
    provider.start_replica(replica)
    status = wait_for(lambda: ended(provider, replica.id), timeout=30, what="the kill")
    assert status.exit_code == -9
    assert "over its limit of 100.0 MiB" in status.reason
    assert "inference_compute_info.cpu_memory" in status.reason


def test_the_server_is_told_of_a_memory_kill_before_it(
    provider: LocalProvider, tmp_path: Path
) -> None:
    told: list[tuple[str, int, int, int | None]] = []
    instance = provider.start_instance("u/cc/a", ComputeShape(cpus=1, memory_bytes=GIB))
    hog = "import time\nblock = bytearray(300 * 2**20)\nprint('held', flush=True)\ntime.sleep(60)"
    replica = launch(tmp_path, instance.id, hog, memory=100 * 2**20)

    def record(replica_id: str, used: int, limit: int) -> None:
        exit_code = provider._replicas[replica_id].proc.poll()  # None: not killed yet
        told.append((replica_id, used, limit, exit_code))

    provider.on_out_of_memory = record
    provider.start_replica(replica)
    wait_for(lambda: ended(provider, replica.id), timeout=30, what="the kill")
    ((replica_id, used, limit, exit_code),) = told
    assert (replica_id, limit, exit_code) == (replica.id, 100 * 2**20, None)
    assert used > limit


def test_shutdown_stops_every_replica(provider: LocalProvider, tmp_path: Path) -> None:
    instance = provider.start_instance("u/cc/a", ComputeShape(cpus=1, memory_bytes=GIB))
    replicas = [
        launch(tmp_path, instance.id, f"import time; x = {n}; time.sleep(60)") for n in range(2)
    ]
    for replica in replicas:
        provider.start_replica(replica)
    pids = [held.proc.pid for held in provider._replicas.values()]
    provider.shutdown(grace=5.0)
    assert provider.poll() == [] and provider.instances() == []
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reaped: not even a zombie is left
