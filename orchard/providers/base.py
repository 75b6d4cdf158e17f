"""The provider seam: where a compute cluster's instances and runners come from.

A provider is named by ``cloud_provider.id``. For the control plane it answers what it offers
(regions, instance types) and whether a nodepool's instance types can exist on it. Starting and
stopping instances and runner replicas are added by the orchestration layer.

Contracts: every method returns fast and never blocks on the outside system for long; answers
about capacity are facts about real machines, not promises.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

from orchard.quantities import format_bytes


@dataclass(frozen=True)
class ComputeShape:
    """An instance type's resources in plain numbers."""

    cpus: float
    memory_bytes: int
    num_accelerators: int = 0
    accelerator_types: tuple[str, ...] = ()
    accelerator_memory_bytes: int = 0

    def compute_info(self) -> dict[str, Any]:
        """The shape as ``ComputeInfo`` fields (quantity strings)."""
        info: dict[str, Any] = {
            "cpu_limit": f"{self.cpus:g}",
            "cpu_memory": format_bytes(self.memory_bytes),
            "num_accelerators": self.num_accelerators,
            "accelerator_type": list(self.accelerator_types),
        }
        if self.accelerator_memory_bytes:
            info["accelerator_memory"] = format_bytes(self.accelerator_memory_bytes)
        return info


@dataclass(frozen=True)
class InstanceTypeInfo:
    id: str
    description: str
    shape: ComputeShape
    price: str = "0"
    capacity_types: tuple[int, ...] = field(default=(1,))


class Provider(abc.ABC):
    id: str
    name: str

    @abc.abstractmethod
    def regions(self) -> list[str]:
        """Regions a compute cluster of this provider may name."""

    @abc.abstractmethod
    def instance_types(self, region: str) -> list[InstanceTypeInfo]:
        """Instance types offered in ``region`` (which the caller has checked)."""

    @abc.abstractmethod
    def check_shape(self, shape: ComputeShape) -> list[tuple[str, str]]:
        """Why ``shape`` cannot be an instance here: ``(field, reason with fix)`` pairs;
        empty when it fits."""
