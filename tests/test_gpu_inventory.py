"""The host's GPUs through NVML, matched against what nodepools ask for; no GPU needed (NVML is
replaced by a scripted module with the same calls)."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from orchard.providers.base import ComputeShape
from orchard.providers.inventory import Gpu, HostInventory, read_gpus
from orchard.providers.local import LocalProvider, accelerator_matches

GIB = 2**30


class NVMLError(Exception):
    pass


def fake_nvml(
    devices: list[tuple[Any, int]], *, init_fails: bool = False, list_fails: bool = False
):
    module = types.ModuleType("pynvml")
    module.NVMLError = NVMLError  # type: ignore[attr-defined]
    calls: list[str] = []

    def init() -> None:
        calls.append("init")
        if init_fails:
            raise NVMLError("driver not loaded")

    def count() -> int:
        if list_fails:
            raise NVMLError("GPU is lost")
        return len(devices)

    module.nvmlInit = init  # type: ignore[attr-defined]
    module.nvmlShutdown = lambda: calls.append("shutdown")  # type: ignore[attr-defined]
    module.nvmlDeviceGetCount = count  # type: ignore[attr-defined]
    module.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    module.nvmlDeviceGetName = lambda h: devices[h][0]  # type: ignore[attr-defined]
    module.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=devices[h][1])  # type: ignore[attr-defined]
    module.calls = calls  # type: ignore[attr-defined]
    return module


def test_read_gpus_lists_each_device_with_name_and_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = fake_nvml([(b"NVIDIA H200", 141 * GIB), ("NVIDIA H200", 141 * GIB)])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    assert read_gpus() == (Gpu(0, "NVIDIA H200", 141 * GIB), Gpu(1, "NVIDIA H200", 141 * GIB))
    assert nvml.calls == ["init", "shutdown"]


def test_read_gpus_without_a_driver_is_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml([], init_fails=True))
    assert read_gpus() == ()


def test_read_gpus_that_fails_midway_is_no_gpu_and_shuts_nvml_down(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    nvml = fake_nvml([("NVIDIA H200", GIB)], list_fails=True)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    assert read_gpus() == ()
    assert nvml.calls == ["init", "shutdown"]
    assert "NVML failed while listing GPUs: GPU is lost" in caplog.text


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("NVIDIA H200", "NVIDIA H200", True),
        ("nvidia-h200", "NVIDIA H200", True),  # case and spaces as hyphens
        ("NVIDIA-*", "NVIDIA H200", True),
        ("*H200*", "NVIDIA H200 NVL", True),
        ("NVIDIA-A100*", "NVIDIA H200", False),
        ("AMD-*", "NVIDIA H200", False),
    ],
)
def test_accelerator_matching(pattern: str, name: str, matches: bool) -> None:
    assert accelerator_matches(pattern, name) is matches


H200_HOST = HostInventory(cpus=16, memory_bytes=128 * GIB, gpus=(Gpu(0, "NVIDIA H200", 141 * GIB),))


def gpu_shape(count: int = 1, types_: tuple[str, ...] = (), memory: int = 0) -> ComputeShape:
    return ComputeShape(
        cpus=4,
        memory_bytes=16 * GIB,
        num_accelerators=count,
        accelerator_types=types_,
        accelerator_memory_bytes=memory,
    )


def test_a_gpu_nodepool_fits_a_host_that_has_the_gpu() -> None:
    local = LocalProvider(H200_HOST)
    assert local.check_shape(gpu_shape(1, ("NVIDIA-*",), 80 * GIB)) == []
    ids = [t.id for t in local.instance_types("local")]
    assert "local-gpu-1x-nvidia-h200" in ids


@pytest.mark.parametrize(
    ("host", "shape", "field", "says"),
    [
        (
            HostInventory(cpus=16, memory_bytes=64 * GIB),
            gpu_shape(1),
            "num_accelerators",
            "this host has no GPU; set num_accelerators: 0",
        ),
        (
            H200_HOST,
            gpu_shape(1, ("NVIDIA-A100*",)),
            "accelerator_type",
            "this host has: NVIDIA H200",
        ),
        (
            H200_HOST,
            gpu_shape(2),
            "num_accelerators",
            "2 GPUs matching ['*'] requested but this host has 1 (NVIDIA H200); lower",
        ),
        (H200_HOST, gpu_shape(1, (), 200 * GIB), "num_accelerators", "with at least 200"),
    ],
)
def test_a_gpu_nodepool_the_host_cannot_hold_is_refused_clearly(
    host: HostInventory, shape: ComputeShape, field: str, says: str
) -> None:
    ((name, reason),) = LocalProvider(host).check_shape(shape)
    assert name == field
    assert says in reason
