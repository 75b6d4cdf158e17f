"""What a replica requests and an instance holds: CPUs, memory and accelerators."""

from __future__ import annotations

from dataclasses import dataclass

from orchard.configs import ComputeInfoSpec
from orchard.providers.base import ComputeShape
from orchard.providers.gpus import GpuNeed
from orchard.quantities import byte_count

_EPSILON = 1e-9
_GIB = 2**30
_MIB = 2**20


def _memory_text(count: int) -> str:
    if count % (_GIB // 4) == 0:
        return f"{count / _GIB:g} GiB"
    if count % _MIB == 0:
        return f"{count // _MIB} MiB"
    return f"{count} bytes"


@dataclass(frozen=True)
class Resources:
    """CPUs, memory and accelerators: what a replica requests or an instance holds.

    ``accelerator_memory_bytes`` is a size per accelerator, not a quantity (what each of a
    replica's devices must have free, what each of a shape's devices has; 0: unknown): sums
    and differences leave it 0."""

    cpus: float
    memory_bytes: int
    accelerators: int = 0
    accelerator_memory_bytes: int = 0

    @classmethod
    def of_shape(cls, shape: ComputeShape) -> Resources:
        return cls(
            shape.cpus, shape.memory_bytes, shape.num_accelerators, shape.accelerator_memory_bytes
        )

    @classmethod
    def from_compute_info(cls, info: ComputeInfoSpec) -> Resources:
        """A replica's request from a model version's ``inference_compute_info``: the
        ``*_requests`` quantities when given (what a replica reserves), else the limits."""
        cpus, memory = info.reserved()
        gpu_memory = byte_count(info.accelerator_memory) if info.accelerator_memory else 0
        return cls(cpus, memory, info.num_accelerators, gpu_memory)

    def host(self) -> Resources:
        """Its CPUs and memory alone."""
        return Resources(self.cpus, self.memory_bytes)

    def gpus(self, packing: bool) -> GpuNeed:
        """Its accelerators as a GPU need (shared when ``packing`` and the memory is known)."""
        return GpuNeed.of(self.accelerators, self.accelerator_memory_bytes, packing)

    def __add__(self, other: Resources) -> Resources:
        return Resources(
            self.cpus + other.cpus,
            self.memory_bytes + other.memory_bytes,
            self.accelerators + other.accelerators,
        )

    def __sub__(self, other: Resources) -> Resources:
        """The difference, never below zero."""
        return Resources(
            max(0.0, self.cpus - other.cpus),
            max(0, self.memory_bytes - other.memory_bytes),
            max(0, self.accelerators - other.accelerators),
        )

    def fits_in(self, room: Resources) -> bool:
        return (
            self.cpus <= room.cpus + _EPSILON
            and self.memory_bytes <= room.memory_bytes
            and self.accelerators <= room.accelerators
        )

    def share_of(self, total: Resources) -> float:
        """The largest fraction of any resource of ``total`` that this is (0 for none)."""
        parts = [
            (self.cpus, total.cpus),
            (float(self.memory_bytes), float(total.memory_bytes)),
            (float(self.accelerators), float(total.accelerators)),
        ]
        return max((used / whole for used, whole in parts if whole > 0), default=0.0)

    def describe(self) -> str:
        """E.g. ``2 CPUs / 4 GiB`` or ``1 CPU / 512 MiB / 1 accelerator``."""
        text = (
            f"{self.cpus:g} CPU{'' if self.cpus == 1 else 's'} / {_memory_text(self.memory_bytes)}"
        )
        if self.accelerators:
            text += f" / {self.accelerators} accelerator{'' if self.accelerators == 1 else 's'}"
            if self.accelerator_memory_bytes:
                each = " each" if self.accelerators > 1 else ""
                text += f" with {_memory_text(self.accelerator_memory_bytes)}{each}"
        return text
