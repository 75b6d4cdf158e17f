"""Models and model versions.

Versions created through ``PostModelVersions`` carry no package (the seed system's local-runner
flow creates them this way): they are ready at once for runners that are attached by hand.
A model or version that a deployment serves cannot be deleted (see :mod:`orchard.services.apps`).
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
from orchard.ids import VersionRef as VersionRef  # where orchestration/ still imports it
from orchard.services.apps import deployments_using, get_app, refuse_if_deployed
from orchard.services.common import Page, cli_hint, only_one, patch_fields
from orchard.store.models import ModelRow, ModelVersionRow


@dataclass(frozen=True)
class ModelType:
    """A model type: what a model takes and gives, as the official SDK reads it
    (``input_fields`` tells its ``*_by_*`` helpers which kind of input to send)."""

    id: str
    title: str
    input_fields: tuple[str, ...]
    output_fields: tuple[str, ...]


# Orchard serves custom models of any type; these are the types its listing names.
MODEL_TYPES = (
    ModelType("any-to-any", "Any to any", ("image", "text", "audio", "video"), ("text",)),
    ModelType("text-to-text", "Text to text", ("text",), ("text",)),
    ModelType("multimodal-to-text", "Multimodal to text", ("image", "text"), ("text",)),
    ModelType("text-to-image", "Text to image", ("text",), ("image",)),
    ModelType("text-to-audio", "Text to audio", ("text",), ("audio",)),
    ModelType("audio-to-text", "Audio to text", ("audio",), ("text",)),
    ModelType("text-classifier", "Text classifier", ("text",), ("concepts",)),
    ModelType("visual-classifier", "Visual classifier", ("image",), ("concepts",)),
    ModelType("visual-detector", "Visual detector", ("image",), ("regions",)),
    ModelType("visual-embedder", "Visual embedder", ("image",), ("embeddings",)),
    ModelType("text-embedder", "Text embedder", ("text",), ("embeddings",)),
)


def get_model_type(model_type_id: str) -> ModelType:
    for model_type in MODEL_TYPES:
        if model_type.id == model_type_id:
            return model_type
    raise errors.ModelNotFound(
        f"model type {model_type_id!r} is not one Orchard knows; use one of: "
        f"{', '.join(t.id for t in MODEL_TYPES)}"
    )


def _model_not_found(owner: str, app_id: str, model_id: str) -> errors.ModelNotFound:
    return errors.ModelNotFound(
        f"model {model_id!r} not found in app {app_id!r} of user {owner!r}; upload it with "
        f"{cli_hint('model upload PATH')} or create it with App.create_model (in either SDK)"
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


def patch_model(session: Session, model: ModelRow, change: dict[str, Any], action: str) -> ModelRow:
    """Change a model's fields (description, visibility, model_type_id ...)."""
    model.spec = patch_fields(model.spec, change, action, errors.ModelInvalid)
    if change.get("model_type_id"):
        model.model_type_id = change["model_type_id"]
    return model


def delete_models(session: Session, owner: str, app_id: str, model_ids: list[str]) -> list[str]:
    """Delete models with their versions; all must exist and none be deployed, or nothing is."""
    if not model_ids:
        raise errors.InvalidRequest("no model ids given; pass at least one id")
    rows = [find_model(session, owner, app_id, m) for m in dict.fromkeys(model_ids)]
    for row in rows:
        used_by = deployments_using(session, owner, row.app_id, row.id)
        refuse_if_deployed(f"model {row.id!r}", used_by, errors.ModelConflict)
    for row in rows:
        session.delete(row)
    return [row.id for row in rows]


def all_model_ids(session: Session, owner: str, app_id: str) -> list[str]:
    query = select(ModelRow.id).where(ModelRow.user_id == owner, ModelRow.app_id == app_id)
    return list(session.scalars(query))


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
            "Model.list_versions() (in either SDK)"
        )
    return row


def get_version_or_latest(session: Session, model: ModelRow, version_id: str) -> ModelVersionRow:
    """The version named, or with an empty id the newest (as the hosted API answers)."""
    if version_id:
        return get_model_version(session, model, version_id)
    latest = latest_model_version(session, model)
    if latest is None:
        raise errors.ModelVersionNotFound(
            f"model {model.id!r} has no version yet; upload one with "
            f"{cli_hint('model upload PATH')}"
        )
    return latest


def patch_model_version(
    session: Session, model: ModelRow, version_id: str, change: dict[str, Any], action: str
) -> ModelVersionRow:
    """Change a version's fields (description, method_signatures ...)."""
    row = get_model_version(session, model, version_id)
    row.spec = patch_fields(row.spec, change, action, errors.ModelInvalid)
    return row


def delete_model_version(session: Session, model: ModelRow, version_id: str) -> None:
    row = get_model_version(session, model, version_id)
    used_by = deployments_using(session, model.user_id, model.app_id, model.id, version_id)
    refuse_if_deployed(
        f"version {version_id!r} of model {model.id!r}", used_by, errors.ModelConflict
    )
    session.delete(row)


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
