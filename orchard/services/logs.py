"""Log entries kept by the server (build logs now; runner and event logs later)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from orchard.services.common import Page
from orchard.store.models import LogEntryRow

BUILDER = "builder"


@dataclass(frozen=True)
class LogRef:
    """Whose log: a user's model version and a log type."""

    user_id: str
    model_id: str
    model_version_id: str
    log_type: str = BUILDER


def append_logs(session: Session, ref: LogRef, messages: list[str]) -> None:
    session.add_all(
        LogEntryRow(
            user_id=ref.user_id,
            log_type=ref.log_type,
            model_id=ref.model_id,
            model_version_id=ref.model_version_id,
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
    return list(session.scalars(page.apply(query)))
