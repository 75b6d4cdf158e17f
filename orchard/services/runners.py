"""Runners: a model version served from one nodepool by replica processes that connect in.

A runner row is what a replica names in its hello; its version and nodepool decide which
deployments the replica serves. Runners are created by hand (the local-runner flow,
``orchard runner``) or by the orchestrator, one per (deployment, nodepool), marked with the
metadata key :data:`MANAGED`. Those follow their deployment: a user may neither delete one
(the deployment's replicas would lose their row) nor mark a runner of their own with the key.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from orchard import errors
from orchard.configs import RunnerSpec
from orchard.ids import VersionRef
from orchard.services import models as model_service
from orchard.services.common import Page
from orchard.store.models import NodepoolRow, RunnerRow

MANAGED = "orchard.deployment"  # the metadata key naming the deployment a runner serves


def not_found(owner: str, runner_id: str) -> errors.RunnerNotFound:
    return errors.RunnerNotFound(
        f"runner {runner_id!r} not found for user {owner!r}; list them with "
        "Nodepool.list_runners() (in either SDK)"
    )


def managed_by(row: RunnerRow) -> str:
    """The deployment the orchestrator made ``row`` for ("" for a runner made by hand)."""
    metadata = row.spec.get("metadata") or {}
    return str(metadata.get(MANAGED, ""))


def create_runner(
    session: Session,
    nodepool: NodepoolRow,
    spec: RunnerSpec,
    where: str,
    *,
    orchestrator: bool = False,
) -> RunnerRow:
    """A runner of ``spec`` in ``nodepool``; only the orchestrator (``orchestrator``) may
    mark one with :data:`MANAGED`."""
    if not orchestrator and MANAGED in (spec.metadata or {}):
        raise errors.RunnerInvalid(
            f"{where}.metadata: the key {MANAGED!r} is reserved for the runners Orchard makes "
            "for deployments; remove it (deploy the model with PostDeployments to have Orchard "
            "run its replicas)"
        )
    ref = spec.worker.model
    assert ref is not None  # WorkerSpec requires a model
    if ref.user_id and ref.user_id != nodepool.user_id:
        raise errors.ModelNotFound(
            f"{where}.worker.model: model {ref.id!r} of user {ref.user_id!r} not found"
        )
    model = model_service.find_model(session, nodepool.user_id, ref.app_id, ref.id)
    version_id = ref.model_version.id if ref.model_version else ""
    version = (
        model_service.get_model_version(session, model, version_id)
        if version_id
        else model_service.latest_model_version(session, model)
    )
    if version is None:
        raise errors.RunnerInvalid(f"{where}.worker.model: model {model.id!r} has no version")
    row = RunnerRow(
        id=uuid.uuid4().hex,
        user_id=nodepool.user_id,
        compute_cluster_id=nodepool.compute_cluster_id,
        nodepool_id=nodepool.id,
        model_user_id=version.user_id,
        app_id=version.app_id,
        model_id=version.model_id,
        model_version_id=version.id,
        num_replicas=spec.num_replicas,
        spec=spec.model_dump(exclude_none=True, exclude={"worker", "num_replicas"}),
    )
    session.add(row)
    session.flush()
    return row


def get_runner(session: Session, owner: str, runner_id: str) -> RunnerRow:
    row = session.get(RunnerRow, runner_id)
    if row is None or row.user_id != owner:
        raise not_found(owner, runner_id)
    return row


def version_of(row: RunnerRow) -> VersionRef:
    return VersionRef(row.model_user_id, row.app_id, row.model_id, row.model_version_id)


def list_runners(
    session: Session,
    owner: str,
    cluster_id: str,
    nodepool_id: str,
    version_ids: tuple[str, ...],
    page: Page,
) -> list[RunnerRow]:
    query = select(RunnerRow).where(RunnerRow.user_id == owner)
    if cluster_id:
        query = query.where(RunnerRow.compute_cluster_id == cluster_id)
    if nodepool_id:
        query = query.where(RunnerRow.nodepool_id == nodepool_id)
    if version_ids:
        query = query.where(RunnerRow.model_version_id.in_(version_ids))
    return list(session.scalars(page.apply(query.order_by(RunnerRow.created_at, RunnerRow.id))))


def delete_runners(session: Session, owner: str, runner_ids: list[str]) -> list[str]:
    if not runner_ids:
        raise errors.InvalidRequest("no runner ids given; pass at least one id")
    rows = [get_runner(session, owner, r) for r in dict.fromkeys(runner_ids)]
    for row in rows:
        if deployment := managed_by(row):
            raise errors.RunnerConflict(
                f"runner {row.id!r} is run by Orchard for deployment {deployment!r}, and goes "
                f"with it: scale the deployment (PatchDeployments, autoscale_config) or delete "
                f"it (`orchard deployment delete {deployment}`); nothing was deleted"
            )
    for row in rows:
        session.delete(row)
    return [row.id for row in rows]
