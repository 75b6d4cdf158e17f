"""Apps: the namespace a user's models live in."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from orchard import errors
from orchard.configs import ensure_description, ensure_id
from orchard.services.common import Page
from orchard.store.models import AppRow


def create_app(session: Session, owner: str, app_id: str, spec: dict[str, Any]) -> AppRow:
    ensure_id(app_id, "app id", errors.AppInvalid)
    ensure_description(str(spec.get("description", "")), "app", errors.AppInvalid)
    if session.get(AppRow, (owner, app_id)) is not None:
        raise errors.AppInvalid(f"app {app_id!r} already exists for user {owner!r}")
    row = AppRow(user_id=owner, id=app_id, spec=spec)
    session.add(row)
    session.flush()
    return row


def get_app(session: Session, owner: str, app_id: str) -> AppRow:
    row = session.get(AppRow, (owner, app_id))
    if row is None:
        raise errors.AppNotFound(
            f"app {app_id!r} not found for user {owner!r}; create it with User.create_app"
        )
    return row


def list_apps(session: Session, owner: str, page: Page) -> list[AppRow]:
    query = select(AppRow).where(AppRow.user_id == owner).order_by(AppRow.id)
    return list(session.scalars(page.apply(query)))


def delete_app(session: Session, owner: str, app_id: str) -> None:
    session.delete(get_app(session, owner, app_id))
