"""What this host really has: CPUs, memory and GPUs (through NVML when a driver is present)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import psutil

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_bytes: int
    minor: int = -1  # its device node is /dev/nvidia<minor> (-1: unknown, taken as the index)

    @property
    def device_node(self) -> str:
        return f"nvidia{self.minor if self.minor >= 0 else self.index}"


@dataclass(frozen=True)
class HostInventory:
    cpus: int
    memory_bytes: int
    gpus: tuple[Gpu, ...] = field(default=())


def read_gpus() -> tuple[Gpu, ...]:
    """The host's NVIDIA GPUs; none when NVML or a driver is missing."""
    try:
        import pynvml
    except ImportError:  # pragma: no cover - nvidia-ml-py is a dependency
        return ()
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return ()
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else name
            memory = int(pynvml.nvmlDeviceGetMemoryInfo(handle).total)
            gpus.append(Gpu(index, name, memory, _minor(pynvml, handle)))
        return tuple(gpus)
    except pynvml.NVMLError as exc:
        log.warning("NVML failed while listing GPUs: %s", exc)
        return ()
    finally:
        pynvml.nvmlShutdown()


def _minor(pynvml: Any, handle: Any) -> int:
    try:
        return int(pynvml.nvmlDeviceGetMinorNumber(handle))
    except (pynvml.NVMLError, AttributeError):
        return -1


@lru_cache(maxsize=1)
def host_inventory() -> HostInventory:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return HostInventory(
        cpus=cpus or 1, memory_bytes=int(psutil.virtual_memory().total), gpus=read_gpus()
    )
