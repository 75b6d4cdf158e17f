"""Log entries kept by the server: build logs, replica output and orchestrator events."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from orchard.services.common import Page
from orchard.services.runners import get_runner
from orchard.store.models import LogEntryRow

BUILDER = "builder"
RUNNER = "runner"  # what the replicas print
EVENTS = "runner.events"  # what the orchestrator did with them, and why
LOG_TYPES = (BUILDER, RUNNER, EVENTS)


@dataclass(frozen=True)
class LogRef:
    """Whose log: a user's model version and a log type; runner and event logs also name
    where (a compute cluster, nodepool and runner; empty matches any when reading)."""

    user_id: str
    model_id: str
    model_version_id: str
    log_type: str = BUILDER
    compute_cluster_id: str = ""
    nodepool_id: str = ""
    runner_id: str = ""


def runner_log_ref(
    session: Session,
    owner: str,
    log_type: str,
    compute_cluster_id: str,
    nodepool_id: str,
    runner_id: str,
) -> LogRef:
    """The log of the owner's runner ``runner_id``: its model version's, narrowed to the runner
    (a build log is the version's whole)."""
    runner = get_runner(session, owner, runner_id)
    if log_type == BUILDER:
        return LogRef(owner, runner.model_id, runner.model_version_id, BUILDER)
    return LogRef(
        owner,
        runner.model_id,
        runner.model_version_id,
        log_type,
        compute_cluster_id,
        nodepool_id,
        runner_id,
    )


def append_logs(session: Session, ref: LogRef, messages: list[str]) -> None:
    session.add_all(
        LogEntryRow(
            user_id=ref.user_id,
            log_type=ref.log_type,
            model_id=ref.model_id,
            model_version_id=ref.model_version_id,
            compute_cluster_id=ref.compute_cluster_id,
            nodepool_id=ref.nodepool_id,
            runner_id=ref.runner_id,
            message=message,
        )
        for message in messages
    )


def list_logs(session: Session, ref: LogRef, page: Page) -> list[LogEntryRow]:
    query = (
        select(LogEntryRow)
        .where(
            LogEntryRow.user_id == ref.user_id,
            LogEntryRow.model_version_id == ref.model_version_id,
            LogEntryRow.log_type == ref.log_type,
        )
        .order_by(LogEntryRow.id)
    )
    for column, value in (
        (LogEntryRow.compute_cluster_id, ref.compute_cluster_id),
        (LogEntryRow.nodepool_id, ref.nodepool_id),
        (LogEntryRow.runner_id, ref.runner_id),
    ):
        if value:
            query = query.where(column == value)
    return list(session.scalars(page.apply(query)))
