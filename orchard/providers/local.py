"""The ``local`` provider: this host, the embedded default.

Its instance types are slices of the host's real CPUs, memory and GPUs; a nodepool on it may not
promise more than one host holds.
"""

from __future__ import annotations

import fnmatch
import re

from orchard.providers.base import ComputeShape, InstanceTypeInfo, Provider
from orchard.providers.inventory import HostInventory, host_inventory
from orchard.quantities import format_bytes, human_bytes

MIB = 2**20


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def accelerator_matches(pattern: str, name: str) -> bool:
    """``NVIDIA-*`` style wildcards and exact names, case-insensitive, spaces as hyphens."""

    def norm(text: str) -> str:
        return text.strip().upper().replace(" ", "-")

    return fnmatch.fnmatchcase(norm(name), norm(pattern))


class LocalProvider(Provider):
    id = "local"
    name = "This host"

    def __init__(self, inventory: HostInventory | None = None) -> None:
        self._inventory = inventory

    @property
    def inventory(self) -> HostInventory:
        return self._inventory or host_inventory()

    def regions(self) -> list[str]:
        # "na" is the region the seed system's local-runner defaults use.
        return ["local", "na"]

    def instance_types(self, region: str) -> list[InstanceTypeInfo]:
        host = self.inventory
        sizes = sorted({n for n in (1, 2, 4, 8, 16, 32, 64, 128) if n < host.cpus} | {host.cpus})
        types = []
        for cpus in sizes:
            memory = host.memory_bytes * cpus // host.cpus // MIB * MIB
            types.append(
                InstanceTypeInfo(
                    id=f"local-cpu-{cpus}",
                    description=f"{cpus} CPU, {format_bytes(memory)} of this host",
                    shape=ComputeShape(cpus=cpus, memory_bytes=memory),
                )
            )
        by_name: dict[str, list[int]] = {}
        for gpu in host.gpus:
            by_name.setdefault(gpu.name, []).append(gpu.memory_bytes)
        for name, memories in by_name.items():
            count = 1
            while count <= len(memories):
                types.append(
                    InstanceTypeInfo(
                        id=f"local-gpu-{count}x-{_slug(name)}",
                        description=f"{count} x {name} with all CPUs and memory of this host",
                        shape=ComputeShape(
                            cpus=host.cpus,
                            memory_bytes=host.memory_bytes // MIB * MIB,
                            num_accelerators=count,
                            accelerator_types=(name,),
                            accelerator_memory_bytes=min(memories),
                        ),
                    )
                )
                count *= 2
        return types

    def check_shape(self, shape: ComputeShape) -> list[tuple[str, str]]:
        host = self.inventory
        problems: list[tuple[str, str]] = []
        if shape.cpus > host.cpus:
            problems.append(
                (
                    "cpu_limit",
                    f"{shape.cpus:g} CPUs requested but this host has {host.cpus}; lower cpu_limit",
                )
            )
        if shape.memory_bytes > host.memory_bytes:
            problems.append(
                (
                    "cpu_memory",
                    f"{human_bytes(shape.memory_bytes)} requested but "
                    f"this host has {human_bytes(host.memory_bytes)}; "
                    "lower cpu_memory",
                )
            )
        if shape.num_accelerators:
            problems.extend(self._check_accelerators(shape))
        return problems

    def _check_accelerators(self, shape: ComputeShape) -> list[tuple[str, str]]:
        gpus = self.inventory.gpus
        if not gpus:
            return [
                (
                    "num_accelerators",
                    f"{shape.num_accelerators} GPU(s) requested but "
                    "this host has no GPU; set num_accelerators: 0",
                )
            ]
        patterns = shape.accelerator_types or ("*",)
        usable = [g for g in gpus if any(accelerator_matches(p, g.name) for p in patterns)]
        names = ", ".join(sorted({g.name for g in gpus}))
        if not usable:
            return [
                (
                    "accelerator_type",
                    f"no GPU of this host matches {list(patterns)}; this host has: {names}",
                )
            ]
        fitting = [g for g in usable if g.memory_bytes >= shape.accelerator_memory_bytes]
        if len(fitting) < shape.num_accelerators:
            return [
                (
                    "num_accelerators",
                    f"{shape.num_accelerators} GPUs matching "
                    f"{list(patterns)} with at least {human_bytes(shape.accelerator_memory_bytes)}"
                    f" requested but this host has {len(fitting)} ({names})",
                )
            ]
        return []
