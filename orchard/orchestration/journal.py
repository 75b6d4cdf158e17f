"""What the orchestrator says: each deployment's recent events and its problem now, and the log
lines (events, what replicas printed) it writes to the store at the end of a round. Events are
stamped by the injected wall clock."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from orchard.ids import VersionRef
from orchard.orchestration.replica_logs import Entry, read_output
from orchard.orchestration.snapshot import DeploymentPlan, PoolPlan
from orchard.orchestration.world import EVENTS_KEPT, DeploymentKey, Replica
from orchard.services import logs


@dataclass
class Told:
    """What the journal holds of one deployment: its recent events and its problem now."""

    events: deque[str] = field(default_factory=lambda: deque(maxlen=EVENTS_KEPT))
    problem: str = ""


class Journal:
    def __init__(self, log: logging.Logger, wall_clock: Callable[[], float]) -> None:
        self.log, self.wall_clock = log, wall_clock  # the wall clock only stamps events
        self.told: dict[DeploymentKey, Told] = {}
        self.pending: list[Entry] = []

    def of(self, key: DeploymentKey) -> Told:
        return self.told.setdefault(key, Told())

    def keep_only(self, keys: set[DeploymentKey]) -> None:
        """Forget what was told of deployments that are gone."""
        for key in list(self.told):
            if key not in keys:
                del self.told[key]

    def problem(self, plan: DeploymentPlan, problem: str, quiet: bool = False) -> None:
        """``plan``'s problem now; an event when it changed, unless ``quiet``."""
        told = self.of(plan.key)
        if problem != told.problem:
            told.problem = problem
            if not quiet:
                self.deployment_event(plan, problem)

    def solved(self, key: DeploymentKey, problem: str | None = None) -> None:
        """The deployment's problem goes (only if it is still ``problem``, when given)."""
        told = self.of(key)
        if problem is None or told.problem == problem:
            told.problem = ""

    def deployment_event(
        self, plan: DeploymentPlan, message: str, pool: PoolPlan | None = None
    ) -> None:
        self._record(plan.key, plan.version, pool or plan.pools[0], message)

    def replica_event(self, replica: Replica, message: str, warn: bool = False) -> None:
        self._record(replica.deployment, replica.version, replica.pool, message, warn)

    def replica_output(self, replica: Replica) -> None:
        """What ``replica`` printed since the last read, for the runner log."""
        entry = read_output(replica)
        if entry is not None:
            self.pending.append(entry)

    def take(self) -> list[Entry]:
        """The log lines to write, which the journal then forgets."""
        pending, self.pending = self.pending, []
        return pending

    def _record(
        self,
        key: DeploymentKey,
        version: VersionRef,
        pool: PoolPlan,
        message: str,
        warn: bool = False,
    ) -> None:
        stamped = f"{time.strftime('%H:%M:%S', time.localtime(self.wall_clock()))} {message}"
        self.of(key).events.append(stamped)
        level = logging.WARNING if warn else logging.INFO
        self.log.log(level, "deployment %s: %s", key[1], message)
        ref = logs.LogRef(
            key[0],
            version.model_id,
            version.version_id,
            logs.EVENTS,
            pool.key.compute_cluster_id,
            pool.key.nodepool_id,
            pool.runner_id,
        )
        self.pending.append((ref, [stamped]))
