"""Apps: the namespace a user's models live in.

Rule: what a deployment serves cannot be deleted from under it. Deleting an app, a model or a
model version that a deployment uses is refused with a status naming the deployments; the
user deletes them (or points them at another model or version) first. A delete that removes a
container (a compute cluster's nodepools, a nodepool's placements) cascades instead, since a
deployment lives in its nodepools but only refers to its model.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from orchard import errors
from orchard.configs import ensure_description, ensure_id
from orchard.services.common import Page, cli_hint, patch_fields
from orchard.store.models import AppRow, DeploymentRow

APP_FIELDS = ("name", "description", "default_language", "metadata", "visibility", "notes")


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
            f"app {app_id!r} not found for user {owner!r}; create it with User.create_app "
            "(in either SDK)"
        )
    return row


def list_apps(session: Session, owner: str, page: Page) -> list[AppRow]:
    query = select(AppRow).where(AppRow.user_id == owner).order_by(AppRow.id)
    return list(session.scalars(page.apply(query)))


def patch_app(
    session: Session, owner: str, app_id: str, change: dict[str, Any], action: str
) -> AppRow:
    """Change an app's own fields (name, description, visibility ...); others are ignored."""
    row = get_app(session, owner, app_id)
    kept = {k: v for k, v in change.items() if k in APP_FIELDS}
    row.spec = patch_fields(row.spec, kept, action, errors.AppInvalid)
    return row


def deployments_using(
    session: Session, owner: str, app_id: str, model_id: str = "", version_id: str = ""
) -> list[str]:
    """The owner's deployments that serve a model of the app (or that model, or version)."""
    query = select(DeploymentRow.id).where(
        DeploymentRow.user_id == owner,
        DeploymentRow.model_user_id == owner,
        DeploymentRow.app_id == app_id,
    )
    if model_id:
        query = query.where(DeploymentRow.model_id == model_id)
    if version_id:
        query = query.where(DeploymentRow.model_version_id == version_id)
    return list(session.scalars(query.order_by(DeploymentRow.id)))


def refuse_if_deployed(
    what: str, deployment_ids: list[str], error: type[errors.OrchardError]
) -> None:
    """Refuse to delete ``what`` while deployments serve it; the message names them."""
    if not deployment_ids:
        return
    names = ", ".join(repr(d) for d in deployment_ids)
    raise error(
        f"{what} is served by deployment(s) {names}; delete them first with "
        f"{cli_hint('deployment delete ID')}, or point them at another model or version; "
        f"then delete {what} again"
    )


def delete_app(session: Session, owner: str, app_id: str) -> None:
    """Delete an app with its models, unless a deployment serves one of them."""
    row = get_app(session, owner, app_id)
    used_by = deployments_using(session, owner, app_id)
    refuse_if_deployed(f"app {app_id!r}", used_by, errors.AppInvalid)
    session.delete(row)
