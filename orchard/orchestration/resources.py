"""What placement plans with: what a replica requests and an instance holds (CPUs, memory,
accelerators: ``Resources``), and a deployment's nodepools with their instances and what
those hold (``NodepoolView``, ``InstanceView``)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from orchard.configs import ComputeInfoSpec
from orchard.providers.base import ComputeShape
from orchard.providers.gpus import (
    Device,
    GpuNeed,
    choose_devices,
    devices_of,
    gpu_load,
    take_devices,
)
from orchard.quantities import byte_count

CAPACITY_ON_DEMAND = 1
CAPACITY_SPOT = 2

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


NodepoolKey = tuple[str, str]  # (compute cluster id, nodepool id)

_NOTHING = Resources(0.0, 0)


@dataclass(frozen=True)
class InstanceView:
    """A running instance of a nodepool and what its replicas (of any deployment) use: CPUs
    and memory in ``used``, GPUs device by device in ``devices``."""

    id: str
    shape: ComputeShape
    used: Resources = _NOTHING
    replicas: int = 0
    exclusive: bool = False  # holds a replica of a deployment that disabled packing
    devices: tuple[Device, ...] | None = None  # its GPUs and what holds them; None: the shape's

    @property
    def gpus(self) -> tuple[Device, ...]:
        """Its GPUs with what holds them (``devices``, else its shape's, none held)."""
        if self.devices is not None:
            return self.devices
        return devices_of(self.shape.num_accelerators, self.shape.accelerator_memory_bytes)

    @property
    def free(self) -> Resources:
        """The CPUs and memory no replica uses (GPUs: :attr:`gpus`)."""
        return Resources.of_shape(self.shape).host() - self.used.host()

    @property
    def fullness(self) -> float:
        """The largest fraction of its CPUs, its memory or its GPUs in use."""
        host = self.used.host().share_of(Resources.of_shape(self.shape).host())
        return max(host, gpu_load(self.gpus))

    def room(self, request: Resources, need: GpuNeed) -> tuple[int, ...] | None:
        """The devices a replica of ``request`` would get here; None when it does not fit."""
        if not request.host().fits_in(self.free):
            return None
        return choose_devices(self.gpus, need)

    def taken(
        self, request: Resources, need: GpuNeed, devices: tuple[int, ...], exclusive: bool
    ) -> InstanceView:
        """This instance once a replica of ``request`` runs on it, holding ``devices``."""
        return replace(
            self,
            used=self.used + request,
            replicas=self.replicas + 1,
            exclusive=self.exclusive or exclusive,
            devices=take_devices(self.gpus, devices, need) if need.count else self.devices,
        )


@dataclass(frozen=True)
class NodepoolView:
    """A nodepool a deployment may use, as placement sees it."""

    key: NodepoolKey
    shape: ComputeShape  # of its instance type
    priority: int = 0  # deployment_nodepools priority, 0-9, higher first
    price: float = 0.0
    capacity_type: int = CAPACITY_ON_DEMAND
    can_add: int = 0  # instances it may still start (max_instances - current, or less)
    instances: tuple[InstanceView, ...] = ()
    min_instances: int = 0

    @property
    def name(self) -> str:
        return f"{self.key[0]}/{self.key[1]}"

    @property
    def utilization(self) -> float:
        """The largest fraction of the CPUs, memory or GPUs of its instances in use."""
        used, total = _NOTHING, _NOTHING
        gpus = [d for instance in self.instances for d in instance.gpus]
        for instance in self.instances:
            used += instance.used.host()
            total += Resources.of_shape(instance.shape).host()
        return max(used.share_of(total), gpu_load(gpus))
