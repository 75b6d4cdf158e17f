"""Replica choice: a pure function of what the replicas report.

Policy. Nodepools are tried in priority order (a deployment's ``deployment_nodepools``
priority, higher first; equal priorities are one group). Within the first group that has a
replica with a free slot, the replica with the lowest load (items in flight / capacity) wins;
ties go to the replica used least recently, so equal replicas take turns. A draining replica
takes nothing new. No replica with a free slot anywhere: ``None`` (the caller waits). Which
waiting call gets a slot that frees is the dispatcher's to decide (first come, first served; see
:mod:`orchard.dispatch.dispatcher`); this decides only which replica a call goes to.

Caveats. Load is what this server has in flight on each replica, not what the machine is
doing; a slow replica with free slots still gets work until its slots fill.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ReplicaLoad:
    key: str
    priority: int
    in_flight: int
    capacity: int
    last_used: float
    draining: bool = False

    @property
    def free(self) -> bool:
        return not self.draining and self.in_flight < self.capacity


def choose_replica(replicas: Sequence[ReplicaLoad]) -> str | None:
    """The key of the replica to send the next item to, or None when all are full."""
    free = [r for r in replicas if r.free]
    if not free:
        return None
    top = max(r.priority for r in free)
    best = min(
        (r for r in free if r.priority == top),
        key=lambda r: (r.in_flight / r.capacity, r.last_used, r.key),
    )
    return best.key
