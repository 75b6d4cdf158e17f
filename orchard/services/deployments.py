"""Deployments: a model version served from one or more nodepools with autoscaling.

Rules: the model, its version and every nodepool must exist and belong to the deployment's
owner; one deployment per model per nodepool (also a unique constraint in the store); the
floors of the owner's deployments fit the owner's quota (:mod:`orchard.services.quotas`).

A deployment with a nodepool the orchestrator runs replicas in (a ``dedicated`` cluster on a
server that orchestrates) needs a version the orchestrator can start: one made by an upload
whose upload and build did not fail (:func:`version_problem`). A version made without an
upload (``PostModelVersions``, the official local runner's way) is refused there, and a
deployment that names no version gets the newest one that can run where it is deployed. A
deployment only on ``local-dev`` clusters takes any version: its runners are attached by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

from clarifai_grpc.grpc.api.status import status_code_pb2 as sc
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from orchard import errors
from orchard.configs import DeploymentSpec, ensure_id
from orchard.providers import ProviderRegistry
from orchard.services import models as model_service
from orchard.services import nodepools as nodepool_service
from orchard.services.common import Page, cli_hint
from orchard.services.nodepools import find_nodepool
from orchard.services.quotas import UNLIMITED, Limits, check_deployment_floor
from orchard.store.models import (
    DeploymentNodepoolRow,
    DeploymentRow,
    ModelRow,
    ModelVersionRow,
    NodepoolRow,
)

# Kept in their own columns and rows; the rest of the spec is stored as sent.
_NOT_IN_SPEC = {
    "id",
    "user_id",
    "nodepools",
    "deployment_nodepools",
    "worker",
    "desired_worker",
    "status",
}
# A version in one of these states will never run: its upload or its build failed.
FAILED = frozenset(
    {sc.MODEL_UPLOADING_FAILED, sc.MODEL_BUILDING_FAILED, sc.MODEL_BUILD_UNEXPECTED_ERROR}
)
VERSIONS_PER_READ = 50


@dataclass(frozen=True)
class ListFilter:
    nodepool_id: str = ""
    compute_cluster_id: str = ""
    model_version_ids: tuple[str, ...] = ()


def not_found(owner: str, deployment_id: str) -> errors.DeploymentNotFound:
    return errors.DeploymentNotFound(
        f"deployment {deployment_id!r} not found for user {owner!r}; "
        f"list them with {cli_hint('deployment list')}"
    )


def version_problem(version: ModelVersionRow, orchestrated: bool) -> str:
    """Why ``version`` cannot be deployed to nodepools whose replicas the orchestrator starts
    (``orchestrated``), with the fix; "" when it can. On other nodepools every version can be
    deployed: their runners are attached by hand, and the local runner serves versions made
    without an upload."""
    if not orchestrated:
        return ""
    what = f"version {version.id!r} of model {version.model_id!r}"
    if version.status_code in FAILED:
        return (
            f"{what} failed to upload or build ({version.status_description or 'no details'}); "
            "upload the model again with `orchard model upload` and deploy the new version"
        )
    if not version.package_digest and version.status_code != sc.MODEL_UPLOADING:
        return (
            f"{what} was made without an upload (it has no package), so Orchard cannot start "
            "replicas of it; upload the model with `orchard model upload` and deploy that "
            "version, or deploy this one to a local-dev cluster and serve it with "
            "`orchard model serve`"
        )
    return ""


def _latest_deployable(
    session: Session, model: ModelRow, orchestrated: bool
) -> ModelVersionRow | None:
    """The newest version of ``model`` that can be deployed there (see version_problem)."""
    number = 1
    while batch := model_service.list_model_versions(
        session, model, Page(number, VERSIONS_PER_READ)
    ):
        for version in batch:
            if not version_problem(version, orchestrated):
                return version
        number += 1
    return None


def _resolve_version(
    session: Session, owner: str, spec: DeploymentSpec, where: str, orchestrated: bool
) -> ModelVersionRow:
    """The version the spec names, or the newest one that can be deployed there."""
    ref = spec.target_model()
    if ref.user_id and ref.user_id != owner:
        raise errors.ModelNotFound(
            f"{where}.worker.model: model {ref.id!r} of user {ref.user_id!r} not found; "
            "a deployment can only serve its owner's models"
        )
    model = model_service.find_model(session, owner, ref.app_id, ref.id)
    version_id = ref.model_version.id if ref.model_version else ""
    if version_id:
        return model_service.get_model_version(session, model, version_id)
    latest = _latest_deployable(session, model, orchestrated)
    if latest is not None:
        return latest
    if model_service.latest_model_version(session, model) is None:
        raise errors.DeploymentInvalid(
            f"{where}.worker.model: model {model.id!r} has no version yet; upload one with "
            f"{cli_hint('model upload PATH')}"
        )
    raise errors.DeploymentInvalid(
        f"{where}.worker.model: model {model.id!r} has no version Orchard can start replicas "
        "of (each was made without an upload, or failed to upload or build); upload the model "
        "with `orchard model upload`, or deploy to a local-dev cluster and serve it with "
        "`orchard model serve`"
    )


def _moved(row: DeploymentRow, version: ModelVersionRow, nodepools: list[NodepoolRow]) -> bool:
    """Whether a write changes the deployment's version or its nodepools (a new one: yes)."""
    before = {(p.compute_cluster_id, p.nodepool_id) for p in row.placements}
    after = {(n.compute_cluster_id, n.id) for n in nodepools}
    return row.model_version_id != version.id or before != after


def _placements(
    session: Session, owner: str, spec: DeploymentSpec, where: str
) -> list[tuple[NodepoolRow, int]]:
    placements: list[tuple[NodepoolRow, int]] = []
    seen: set[tuple[str, str]] = set()
    for entry in spec.nodepool_entries():
        ref = entry.ref()
        cluster = ref.compute_cluster
        if cluster and cluster.user_id and cluster.user_id != owner:
            raise errors.NodepoolNotFound(
                f"{where}: nodepool {ref.id!r} of user {cluster.user_id!r} not found; a "
                "deployment can only use its owner's nodepools"
            )
        row = find_nodepool(session, owner, cluster.id if cluster else "", ref.id)
        key = (row.compute_cluster_id, row.id)
        if key in seen:
            raise errors.DeploymentInvalid(f"{where}: nodepool {row.id!r} is listed twice")
        seen.add(key)
        placements.append((row, entry.priority))
    return placements


def _check_one_per_nodepool(
    session: Session, deployment_id: str, version: ModelVersionRow, nodepools: list[NodepoolRow]
) -> None:
    for nodepool in nodepools:
        other = session.scalar(
            select(DeploymentNodepoolRow).where(
                DeploymentNodepoolRow.user_id == nodepool.user_id,
                DeploymentNodepoolRow.compute_cluster_id == nodepool.compute_cluster_id,
                DeploymentNodepoolRow.nodepool_id == nodepool.id,
                DeploymentNodepoolRow.model_user_id == version.user_id,
                DeploymentNodepoolRow.app_id == version.app_id,
                DeploymentNodepoolRow.model_id == version.model_id,
                DeploymentNodepoolRow.deployment_id != deployment_id,
            )
        )
        if other is not None:
            raise errors.DeploymentConflict(
                f"nodepool {nodepool.id!r} already has deployment {other.deployment_id!r} of "
                f"model {version.model_id!r}; one deployment per model per nodepool: update "
                f"{other.deployment_id!r} or delete it with "
                f"{cli_hint(f'deployment delete {other.deployment_id}')}"
            )


def _write(
    session: Session,
    row: DeploymentRow,
    spec: DeploymentSpec,
    where: str,
    limits: Limits,
    providers: ProviderRegistry | None,
) -> None:
    """Check the spec against the store, then write it into ``row`` (new or existing)."""
    with session.no_autoflush:
        placements = _placements(session, row.user_id, spec, where)
        nodepools = [np for np, _ in placements]
        runs = any(nodepool_service.orchestrated(np, providers) for np in nodepools)
        version = _resolve_version(session, row.user_id, spec, where, runs)
        # Checked on a move only, so that a deployment stored before the rule can be edited.
        problem = version_problem(version, runs) if _moved(row, version, nodepools) else ""
        if problem:
            raise errors.DeploymentInvalid(f"{where}.worker.model.model_version.id: {problem}")
        _check_one_per_nodepool(session, row.id, version, nodepools)
        check_deployment_floor(session, row, spec, version, nodepools, limits, where)
    if row.placements:
        row.placements.clear()
        session.flush()
    row.model_user_id, row.app_id = version.user_id, version.app_id
    row.model_id, row.model_version_id = version.model_id, version.id
    row.disabled = spec.status == 1
    row.spec = spec.model_dump(exclude_none=True, exclude=_NOT_IN_SPEC)
    row.placements = [
        DeploymentNodepoolRow(
            user_id=row.user_id,
            deployment_id=row.id,
            compute_cluster_id=np.compute_cluster_id,
            nodepool_id=np.id,
            priority=priority,
            position=position,
            model_user_id=version.user_id,
            app_id=version.app_id,
            model_id=version.model_id,
        )
        for position, (np, priority) in enumerate(placements)
    ]
    session.add(row)
    try:
        session.flush()
    except IntegrityError:  # a concurrent create won the race for the same nodepool
        raise errors.DeploymentConflict(
            f"{where}: another deployment of model {version.model_id!r} was just created in one "
            "of these nodepools; one deployment per model per nodepool"
        ) from None


def create_deployment(
    session: Session,
    owner: str,
    spec: DeploymentSpec,
    where: str = "deployment",
    limits: Limits = UNLIMITED,
    providers: ProviderRegistry | None = None,
) -> DeploymentRow:
    """A new deployment. ``providers``: the server's, when it orchestrates (None: no nodepool
    is orchestrated, so any version may be deployed)."""
    ensure_id(spec.id, "deployment id", errors.DeploymentInvalid, where)
    if spec.user_id and spec.user_id != owner:
        raise errors.UserNotFound(f"{where}.user_id: user {spec.user_id!r} not found")
    if session.get(DeploymentRow, (owner, spec.id)) is not None:
        raise errors.DeploymentConflict(
            f"deployment {spec.id!r} already exists for user {owner!r}; pick another id or "
            f"delete it with {cli_hint(f'deployment delete {spec.id}')}"
        )
    row = DeploymentRow(user_id=owner, id=spec.id)
    _write(session, row, spec, where, limits, providers)
    return row


def update_deployment(
    session: Session,
    owner: str,
    spec: DeploymentSpec,
    where: str,
    limits: Limits = UNLIMITED,
    providers: ProviderRegistry | None = None,
) -> DeploymentRow:
    """Overwrite a deployment with ``spec`` (``providers`` as in :func:`create_deployment`)."""
    row = get_deployment(session, owner, spec.id)
    _write(session, row, spec, where, limits, providers)
    return row


def get_deployment(session: Session, owner: str, deployment_id: str) -> DeploymentRow:
    row = session.get(DeploymentRow, (owner, deployment_id))
    if row is None:
        raise not_found(owner, deployment_id)
    return row


def list_deployments(
    session: Session, owner: str, where: ListFilter, page: Page
) -> list[DeploymentRow]:
    query = select(DeploymentRow).where(DeploymentRow.user_id == owner)
    if where.nodepool_id or where.compute_cluster_id:
        uses = select(DeploymentNodepoolRow.deployment_id).where(
            DeploymentNodepoolRow.user_id == owner
        )
        if where.nodepool_id:
            uses = uses.where(DeploymentNodepoolRow.nodepool_id == where.nodepool_id)
        if where.compute_cluster_id:
            uses = uses.where(DeploymentNodepoolRow.compute_cluster_id == where.compute_cluster_id)
        query = query.where(DeploymentRow.id.in_(uses))
    if where.model_version_ids:
        query = query.where(DeploymentRow.model_version_id.in_(where.model_version_ids))
    return list(session.scalars(page.apply(query.order_by(DeploymentRow.id))))


def delete_deployments(session: Session, owner: str, deployment_ids: list[str]) -> list[str]:
    """Delete deployments; all ids must exist, or nothing is deleted."""
    if not deployment_ids:
        raise errors.InvalidRequest("no deployment ids given; pass at least one id")
    rows = [get_deployment(session, owner, d) for d in dict.fromkeys(deployment_ids)]
    for row in rows:
        session.delete(row)
    return [row.id for row in rows]
