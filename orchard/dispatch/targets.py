"""Where a prediction goes: its runner selector resolved against the store.

Order (api-notes 6): an explicit deployment (``runner_selector.deployment``), or an explicit
nodepool (``runner_selector.nodepool``), or a runner (``runner_selector.runner``); otherwise the
caller's deployment of the requested model, or MODEL_NOT_DEPLOYED.
"""

from __future__ import annotations

from dataclasses import dataclass

from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from sqlalchemy import select
from sqlalchemy.orm import Session

from orchard import errors
from orchard.ids import PoolKey, VersionRef, names_caller
from orchard.services import deployments, nodepools, runners
from orchard.services import models as model_service
from orchard.store.models import DeploymentRow


@dataclass(frozen=True)
class Target:
    label: str  # for messages: "deployment 'echo-dep'"
    queue: str  # requests waiting for this target share one bounded queue
    version: VersionRef
    pools: tuple[tuple[PoolKey, int], ...]  # (nodepool, priority)
    runner_id: str = ""  # only this runner's replicas, when the selector names one
    selector: object = None  # what the response's runner_selector says


def _from_deployment(row: DeploymentRow) -> Target:
    if row.disabled:
        raise errors.DeploymentDisabled(
            f"deployment {row.id!r} is disabled; enable it with PatchDeployments "
            "(status ENABLED) to send it predictions"
        )
    pools = tuple(
        (PoolKey(p.user_id, p.compute_cluster_id, p.nodepool_id), p.priority)
        for p in row.placements
    )
    version = VersionRef(row.model_user_id, row.app_id, row.model_id, row.model_version_id)
    selector = resources_pb2.RunnerSelector()
    selector.deployment.id, selector.deployment.user_id = row.id, row.user_id
    return Target(
        f"deployment {row.id!r}",
        f"deployment/{row.user_id}/{row.id}",
        version,
        pools,
        selector=selector,
    )


def _requested_version(
    session: Session, caller: str, request: service_pb2.PostModelOutputsRequest
) -> VersionRef:
    model = model_service.find_model(session, caller, request.user_app_id.app_id, request.model_id)
    version_id = request.version_id or request.model.model_version.id
    version = (
        model_service.get_model_version(session, model, version_id)
        if version_id
        else model_service.latest_model_version(session, model)
    )
    if version is None:
        raise errors.ModelNotDeployed(f"model {model.id!r} has no version to serve")
    return VersionRef.of(version)


def _check_model(request: service_pb2.PostModelOutputsRequest, target: Target) -> None:
    if request.model_id and request.model_id != target.version.model_id:
        raise errors.DeploymentInvalid(
            f"{target.label} serves model {target.version.model_id!r}, not "
            f"{request.model_id!r}; send the request to that model or pick its deployment"
        )


def resolve_target(
    session: Session, caller: str, request: service_pb2.PostModelOutputsRequest
) -> Target:
    selector = request.runner_selector
    if selector.HasField("deployment"):
        if not names_caller(selector.deployment.user_id, caller):
            raise deployments.not_found(selector.deployment.user_id, selector.deployment.id)
        target = _from_deployment(
            deployments.get_deployment(session, caller, selector.deployment.id)
        )
        _check_model(request, target)
        return target
    if selector.HasField("nodepool"):
        return _from_nodepool(session, caller, request)
    if selector.HasField("runner"):
        row = runners.get_runner(session, caller, selector.runner.id)
        pool = PoolKey(row.user_id, row.compute_cluster_id, row.nodepool_id)
        return Target(
            f"runner {row.id!r}",
            f"runner/{row.id}",
            runners.version_of(row),
            ((pool, 0),),
            runner_id=row.id,
            selector=selector,
        )
    return _from_model(session, caller, request)


def _from_nodepool(
    session: Session, caller: str, request: service_pb2.PostModelOutputsRequest
) -> Target:
    ref = request.runner_selector.nodepool
    if not names_caller(ref.compute_cluster.user_id, caller):
        raise nodepools.not_found(ref.compute_cluster.user_id, ref.compute_cluster.id, ref.id)
    pool = nodepools.find_nodepool(session, caller, ref.compute_cluster.id, ref.id)
    key = PoolKey(pool.user_id, pool.compute_cluster_id, pool.id)
    version = _requested_version(session, caller, request)
    return Target(
        f"nodepool {pool.id!r}",
        f"nodepool/{caller}/{pool.compute_cluster_id}/{pool.id}/{version.version_id}",
        version,
        ((key, 0),),
        selector=request.runner_selector,
    )


def _from_model(
    session: Session, caller: str, request: service_pb2.PostModelOutputsRequest
) -> Target:
    owner = request.user_app_id.user_id
    if not names_caller(owner, caller):
        raise errors.ModelNotFound(f"model {request.model_id!r} of user {owner!r} not found")
    model = model_service.find_model(session, caller, request.user_app_id.app_id, request.model_id)
    rows = session.scalars(
        select(DeploymentRow)
        .where(
            DeploymentRow.user_id == caller,
            DeploymentRow.app_id == model.app_id,
            DeploymentRow.model_id == model.id,
            DeploymentRow.disabled.is_(False),
        )
        .order_by(DeploymentRow.id)
    ).all()
    if not rows:
        raise errors.ModelNotDeployed(
            f"model {model.id!r} has no enabled deployment; create one with "
            "`orchard deployment create NODEPOOL_ID ID --config FILE` (or `clarifai "
            "deployment create NODEPOOL_ID ID --config FILE`), or pass deployment_id"
        )
    return _from_deployment(rows[0])
