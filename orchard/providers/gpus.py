"""Which of an instance's GPUs a replica gets. Pure.

A replica that needs accelerators gets whole devices: ``count`` devices of the instance that no
other replica holds and whose memory is at least what the model asks per device
(``inference_compute_info.accelerator_memory``); lowest indices first, so assignments are
repeatable. Nothing is ever placed on a device it does not fit, and never on a held one. When
no such set exists the answer says what is free and what was asked.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from orchard.quantities import human_bytes


@dataclass(frozen=True)
class Device:
    index: int
    memory_bytes: int
    held: bool = False


class NoDevice(Exception):
    """No set of free devices fits the replica; the message says why."""


def assign_devices(devices: Iterable[Device], count: int, memory_bytes: int) -> tuple[int, ...]:
    """The indices of the ``count`` devices the replica gets (empty for a CPU-only replica)."""
    if count <= 0:
        return ()
    devices = sorted(devices, key=lambda d: d.index)
    free = [d for d in devices if not d.held]
    fitting = [d for d in free if d.memory_bytes >= memory_bytes]
    if len(fitting) >= count:
        return tuple(d.index for d in fitting[:count])
    wanted = f"{count} GPU(s)" + (
        f" of at least {human_bytes(memory_bytes)}" if memory_bytes else ""
    )
    if len(devices) < count:
        raise NoDevice(f"{wanted} requested but the instance has {len(devices)}")
    small = len(free) - len(fitting)
    why = f"{len(free)} free" + (f", {small} of them too small" if small else "")
    raise NoDevice(f"{wanted} requested but the instance has {why}")
