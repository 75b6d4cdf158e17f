"""Models and model versions.

Versions created through ``PostModelVersions`` carry no package (the seed system's local-runner
flow creates them this way): they are ready at once for runners that are attached by hand.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from clarifai_grpc.grpc.api.status import status_code_pb2
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from orchard import errors
from orchard.configs import ensure_description, ensure_id
from orchard.services.apps import get_app
from orchard.services.common import Page, only_one
from orchard.store.models import ModelRow, ModelVersionRow


def _model_not_found(owner: str, app_id: str, model_id: str) -> errors.ModelNotFound:
    return errors.ModelNotFound(
        f"model {model_id!r} not found in app {app_id!r} of user {owner!r}; "
        "upload it with `orchard model upload` or create it with App.create_model"
    )


def create_model(
    session: Session, owner: str, app_id: str, model_id: str, spec: dict[str, Any]
) -> ModelRow:
    ensure_id(model_id, "model id", errors.ModelInvalid)
    ensure_description(str(spec.get("description", "")), "model", errors.ModelInvalid)
    get_app(session, owner, app_id)
    if session.get(ModelRow, (owner, app_id, model_id)) is not None:
        raise errors.ModelConflict(f"model {model_id!r} already exists in app {app_id!r}")
    row = ModelRow(
        user_id=owner,
        app_id=app_id,
        id=model_id,
        model_type_id=spec.get("model_type_id", "") or "any-to-any",
        spec=spec,
    )
    session.add(row)
    session.flush()
    return row


def get_model(session: Session, owner: str, app_id: str, model_id: str) -> ModelRow:
    row = session.get(ModelRow, (owner, app_id, model_id))
    if row is None:
        raise _model_not_found(owner, app_id, model_id)
    return row


def find_model(session: Session, owner: str, app_id: str, model_id: str) -> ModelRow:
    """A model by id; without an app id, the user's only model of that id."""
    if app_id:
        return get_model(session, owner, app_id, model_id)
    return only_one(
        session,
        select(ModelRow).where(ModelRow.user_id == owner, ModelRow.id == model_id),
        missing=_model_not_found(owner, "(any)", model_id),
        ambiguous=errors.ModelInvalid(
            f"model id {model_id!r} exists in several apps of user {owner!r}; "
            "name the app with app_id"
        ),
    )


def list_models(session: Session, owner: str, app_id: str, page: Page) -> list[ModelRow]:
    query = select(ModelRow).where(ModelRow.user_id == owner)
    if app_id:
        query = query.where(ModelRow.app_id == app_id)
    return list(session.scalars(page.apply(query.order_by(ModelRow.app_id, ModelRow.id))))


def delete_model(session: Session, owner: str, app_id: str, model_id: str) -> None:
    session.delete(get_model(session, owner, app_id, model_id))


def create_model_version(
    session: Session,
    model: ModelRow,
    spec: dict[str, Any],
    status_code: int = status_code_pb2.MODEL_TRAINED,
) -> ModelVersionRow:
    last = session.scalar(
        select(func.max(ModelVersionRow.seq)).where(
            ModelVersionRow.user_id == model.user_id,
            ModelVersionRow.app_id == model.app_id,
            ModelVersionRow.model_id == model.id,
        )
    )
    row = ModelVersionRow(
        user_id=model.user_id,
        app_id=model.app_id,
        model_id=model.id,
        id=uuid.uuid4().hex,
        seq=(last or 0) + 1,
        status_code=status_code,
        spec=spec,
    )
    session.add(row)
    session.flush()
    return row


def get_model_version(session: Session, model: ModelRow, version_id: str) -> ModelVersionRow:
    row = session.get(ModelVersionRow, (model.user_id, model.app_id, model.id, version_id))
    if row is None:
        raise errors.ModelVersionNotFound(
            f"version {version_id!r} of model {model.id!r} not found; list them with "
            "ListModelVersions"
        )
    return row


def _versions(model: ModelRow) -> Select[Any]:
    """The model's versions, newest first."""
    return (
        select(ModelVersionRow)
        .where(
            ModelVersionRow.user_id == model.user_id,
            ModelVersionRow.app_id == model.app_id,
            ModelVersionRow.model_id == model.id,
        )
        .order_by(ModelVersionRow.seq.desc())
    )


def latest_model_version(session: Session, model: ModelRow) -> ModelVersionRow | None:
    return session.scalar(_versions(model).limit(1))


def list_model_versions(session: Session, model: ModelRow, page: Page) -> list[ModelVersionRow]:
    return list(session.scalars(page.apply(_versions(model))))


@dataclass(frozen=True)
class VersionRef:
    user_id: str
    app_id: str
    model_id: str
    version_id: str

    @classmethod
    def of(cls, row: ModelVersionRow) -> VersionRef:
        return cls(row.user_id, row.app_id, row.model_id, row.id)


def version_row(session: Session, ref: VersionRef) -> ModelVersionRow:
    row = session.get(ModelVersionRow, (ref.user_id, ref.app_id, ref.model_id, ref.version_id))
    if row is None:
        raise errors.ModelVersionNotFound(
            f"version {ref.version_id!r} of model {ref.model_id!r} not found (was it deleted?)"
        )
    return row


def set_version_status(
    session: Session, ref: VersionRef, code: int, description: str, **columns: Any
) -> ModelVersionRow:
    """Move a version to a new status (and set ``package_digest``/``env_key``/``spec``)."""
    row = version_row(session, ref)
    row.status_code, row.status_description = code, description[:1024]
    for name, value in columns.items():
        setattr(row, name, value)
    return row


def versions_with_status(session: Session, code: int) -> list[ModelVersionRow]:
    return list(session.scalars(select(ModelVersionRow).where(ModelVersionRow.status_code == code)))
