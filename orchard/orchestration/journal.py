"""What the orchestrator says: each deployment's state with its recent events and problem, and
the log lines (events, what replicas printed) it writes to the store at the end of a round."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from orchard.orchestration.replica_logs import Entry, read_output
from orchard.orchestration.snapshot import DeploymentPlan, PoolPlan
from orchard.orchestration.world import DeploymentState, Replica
from orchard.services import logs
from orchard.services.models import VersionRef


class Journal:
    def __init__(self, log: logging.Logger, wall_clock: Callable[[], float]) -> None:
        self.log, self.wall_clock = log, wall_clock  # the wall clock only stamps events
        self.states: dict[tuple[str, str], DeploymentState] = {}
        self.pending: list[Entry] = []

    def state(self, key: tuple[str, str]) -> DeploymentState:
        return self.states.setdefault(key, DeploymentState())

    def keep_only(self, keys: set[tuple[str, str]]) -> None:
        """Forget the states of deployments that are gone."""
        for key in list(self.states):
            if key not in keys:
                del self.states[key]

    def problem(self, plan: DeploymentPlan, problem: str) -> None:
        """``plan``'s problem now; an event when it changed."""
        state = self.state(plan.key)
        if problem != state.last_problem:
            state.last_problem = problem
            self.deployment_event(plan, problem)

    def deployment_event(
        self, plan: DeploymentPlan, message: str, pool: PoolPlan | None = None
    ) -> None:
        self._record(plan.key, plan.version, pool or plan.pools[0], message)

    def replica_event(self, replica: Replica, message: str) -> None:
        self._record(replica.deployment, replica.version, replica.plan_pool, message)

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
        self, key: tuple[str, str], version: VersionRef, pool: PoolPlan, message: str
    ) -> None:
        stamped = f"{time.strftime('%H:%M:%S', time.localtime(self.wall_clock()))} {message}"
        self.state(key).events.append(stamped)
        self.log.info("deployment %s: %s", key[1], message)
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
