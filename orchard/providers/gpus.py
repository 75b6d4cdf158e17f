"""Which of an instance's GPUs a replica gets, and what each GPU then holds. Pure.

A replica's GPU need (:class:`GpuNeed`) is ``count`` devices with ``memory_bytes`` each: the model
version's ``inference_compute_info`` (``num_accelerators``, ``accelerator_memory``), where a
memory of 0 (unset) is unknown and means the whole device. The rules:

- A *shared* need (its deployment allows packing and it states its memory) takes only
  ``memory_bytes`` of each of its devices; other shared replicas may use the same devices while
  the memory they take together is at most the device's memory.
- A *whole* need (memory unknown, or packing disabled) holds its devices whole: no one shares
  them, and it only gets devices that nothing holds any of.
- Nothing is placed on a device whose free memory is less than what the need asks. A device
  whose own memory is unknown (an instance type that does not state it) takes one shared
  replica and is then full, as if held whole.
- Among the devices that fit, those already shared come first, the fullest first (the least
  memory left free), so that empty devices stay free for whole-device replicas; then empty
  ones, the smallest first. Ties go to the lowest index, so assignments are repeatable.

What the devices hold (:class:`Device`) is a fold of the needs of the replicas on them
(:func:`take_devices`): a holder rebuilds it from the replicas that run, and a replica's share
is free again once it is gone. When no set of devices fits, :class:`NoDevice` says what was
asked, what each device has, and the fix.

A provider that lets replicas share its instances' GPUs says what they hold
(:class:`SharesDevices`), so that placement plans on the devices as the provider will assign
them.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from orchard.quantities import human_bytes


def _size(count: int) -> str:
    return human_bytes(count).replace(".0 ", " ")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


@dataclass(frozen=True)
class GpuNeed:
    """What one replica needs of its instance's GPUs (``count`` 0: none)."""

    count: int = 0
    memory_bytes: int = 0  # of each device; 0: unknown
    shared: bool = False  # takes memory_bytes of each device and lets others share them

    @classmethod
    def of(cls, count: int, memory_bytes: int, packing: bool = True) -> GpuNeed:
        """The need of a replica asking ``count`` devices of ``memory_bytes`` each: shared when
        packing is allowed and the memory is stated, whole otherwise."""
        return cls(count, memory_bytes, shared=packing and memory_bytes > 0 and count > 0)

    def describe(self) -> str:
        """E.g. ``1 GPU with 40 GiB free``, ``2 whole GPUs with at least 40 GiB each``."""
        each = " each" if self.count > 1 else ""
        if self.shared:
            return f"{_plural(self.count, 'GPU')} with {_size(self.memory_bytes)} free{each}"
        text = f"{self.count} whole GPU{'' if self.count == 1 else 's'}"
        if self.memory_bytes:
            text += f" with at least {_size(self.memory_bytes)}{each}"
        return text


@dataclass(frozen=True)
class Device:
    """One GPU of an instance and what its replicas hold of it."""

    index: int
    memory_bytes: int  # 0: unknown
    used_bytes: int = 0  # taken by the shared replicas on it
    sharers: int = 0  # shared replicas on it
    held: bool = False  # held whole by one replica

    @property
    def empty(self) -> bool:
        return not self.held and self.sharers == 0

    @property
    def free_bytes(self) -> int:
        """Memory no replica takes (0 when held whole, or shared with its memory unknown)."""
        if self.held or (self.sharers and not self.memory_bytes):
            return 0
        return max(0, self.memory_bytes - self.used_bytes)

    @property
    def load(self) -> float:
        """The fraction of the device taken: 1 when held whole, used over memory when shared."""
        if self.empty:
            return 0.0
        if self.held or not self.memory_bytes:
            return 1.0
        return min(1.0, self.used_bytes / self.memory_bytes)

    def fits(self, need: GpuNeed) -> bool:
        """Whether this device can be one of ``need``'s devices now."""
        if not need.shared:
            return self.empty and (not self.memory_bytes or need.memory_bytes <= self.memory_bytes)
        if self.held:
            return False
        if not self.memory_bytes:
            return self.sharers == 0
        return self.used_bytes + need.memory_bytes <= self.memory_bytes

    def take(self, need: GpuNeed) -> Device:
        """The device once a replica of ``need`` holds it."""
        if need.shared:
            return replace(
                self, used_bytes=self.used_bytes + need.memory_bytes, sharers=self.sharers + 1
            )
        return replace(self, held=True)

    def describe(self) -> str:
        """What it has for people: ``GPU 0 has 12 GiB free (shared by 2 replicas)``."""
        if self.held:
            return f"GPU {self.index} is held whole by a replica"
        if self.sharers:
            free = f"has {_size(self.free_bytes)} free" if self.memory_bytes else "is in use"
            return f"GPU {self.index} {free} (shared by {_plural(self.sharers, 'replica')})"
        if self.memory_bytes:
            return f"GPU {self.index} has {_size(self.memory_bytes)} free"
        return f"GPU {self.index} is free"


class NoDevice(Exception):
    """No set of devices fits the replica; the message says why and what to do."""


def devices_of(count: int, memory_bytes: int) -> tuple[Device, ...]:
    """The GPUs of an instance type (``count`` devices of ``memory_bytes``), none of them held."""
    return tuple(Device(index, memory_bytes) for index in range(count))


def _rank(device: Device) -> tuple[bool, int, int]:
    return (
        device.empty,
        device.free_bytes if device.sharers else device.memory_bytes,
        device.index,
    )


def choose_devices(devices: Iterable[Device], need: GpuNeed) -> tuple[int, ...] | None:
    """The indices of the devices ``need`` gets, by the rules above; None when none fit."""
    if need.count <= 0:
        return ()
    fitting = sorted((d for d in devices if d.fits(need)), key=_rank)
    if len(fitting) < need.count:
        return None
    return tuple(sorted(d.index for d in fitting[: need.count]))


def assign_devices(devices: Iterable[Device], need: GpuNeed) -> tuple[int, ...]:
    """Like :func:`choose_devices`; :class:`NoDevice` with the facts when none fit."""
    devices = sorted(devices, key=lambda d: d.index)
    chosen = choose_devices(devices, need)
    if chosen is None:
        raise NoDevice(refusal(devices, need))
    return chosen


def refusal(devices: Sequence[Device], need: GpuNeed) -> str:
    """Why ``need`` does not fit ``devices``: what was asked, what each device has, the fix."""
    asked = f"{need.describe()} requested"
    if len(devices) < need.count:
        return (
            f"{asked} but the instance has {_plural(len(devices), 'GPU')}; use an instance "
            "type with more GPUs or lower the model's inference_compute_info.num_accelerators"
        )
    facts = describe_devices(devices)
    large = [d for d in devices if Device(d.index, d.memory_bytes).fits(need)]
    if len(large) < need.count:
        fix = (
            "lower the model's inference_compute_info.accelerator_memory or use an instance "
            "type with larger GPUs"
        )
    else:
        fix = "it fits once replicas on these GPUs end, or on another instance"
    return f"{asked}; {facts}; {fix}"


def describe_devices(devices: Iterable[Device]) -> str:
    """Each device with what it has, by index: ``GPU 0 has 12 GiB free (shared by 2
    replicas), GPU 1 is held whole by a replica``."""
    return ", ".join(d.describe() for d in sorted(devices, key=lambda d: d.index))


def take_devices(
    devices: Iterable[Device], indices: Iterable[int], need: GpuNeed
) -> tuple[Device, ...]:
    """``devices`` once a replica of ``need`` holds those of ``indices``."""
    chosen = set(indices)
    return tuple(d.take(need) if d.index in chosen else d for d in devices)


def gpu_load(devices: Sequence[Device]) -> float:
    """The fraction of the devices taken, on average (0 for none)."""
    return sum(d.load for d in devices) / len(devices) if devices else 0.0


class SharesDevices(abc.ABC):
    """A provider capability: it assigns its instances' GPUs by the rules above (replicas may
    share a device) and says what they hold, so that placement plans on the same facts."""

    @abc.abstractmethod
    def devices(self, instance_id: str) -> tuple[Device, ...]:
        """The GPUs of a running instance with what its replicas hold of them now (the memory
        each really has); () for an instance it does not know."""
