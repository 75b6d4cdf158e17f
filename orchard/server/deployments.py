"""gRPC handlers for deployments (user-scoped; they name their nodepools)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from clarifai_grpc.grpc.api.status import status_pb2

from orchard import errors
from orchard.configs import DeploymentSpec, spec_from_proto
from orchard.providers import ProviderRegistry
from orchard.server.convert import done, fill, page, patched, stamp
from orchard.server.rpc import Call, Router
from orchard.services import deployments as service
from orchard.services.quotas import Limits
from orchard.store.models import DeploymentRow

if TYPE_CHECKING:
    from orchard.orchestration.view import LiveView

router = Router()
DISABLED = resources_pb2.Deployment.Status.DISABLED


def _worker(row: DeploymentRow) -> resources_pb2.Worker:
    return resources_pb2.Worker(
        model=resources_pb2.Model(
            id=row.model_id,
            app_id=row.app_id,
            user_id=row.model_user_id,
            model_version=resources_pb2.ModelVersion(id=row.model_version_id),
        )
    )


def to_proto(row: DeploymentRow, live: LiveView | None = None) -> resources_pb2.Deployment:
    dep = resources_pb2.Deployment()
    fill(dep, row.spec)
    dep.id, dep.user_id = row.id, row.user_id
    dep.worker.CopyFrom(_worker(row))
    dep.desired_worker.CopyFrom(_worker(row))
    if row.disabled:
        dep.status = DISABLED
    for use in row.placements:
        cluster = resources_pb2.ComputeCluster(id=use.compute_cluster_id, user_id=use.user_id)
        dep.nodepools.add(id=use.nodepool_id, compute_cluster=cluster)
        dep.deployment_nodepools.add(
            id=use.nodepool_id,
            compute_cluster=cluster,
            priority=use.priority,
            nodepool=resources_pb2.Nodepool(id=use.nodepool_id, compute_cluster=cluster),
        )
    stamp(dep, row)
    seen = live.deployments.get((row.user_id, row.id)) if live is not None else None
    if seen is not None:
        metrics = dep.deployment_metrics
        metrics.desired_replicas, metrics.live_replicas = seen.desired, seen.live
        metrics.aggregate.desired_replicas, metrics.aggregate.live_replicas = (
            seen.desired,
            seen.live,
        )
        for use in row.placements:
            here = [r for r in seen.replicas if r.nodepool.nodepool_id == use.nodepool_id]
            pool = metrics.nodepool_metrics.add(
                compute_cluster_id=use.compute_cluster_id, nodepool_id=use.nodepool_id
            )
            pool.metrics.live_replicas = sum(1 for r in here if r.state == "ready")
            pool.metrics.desired_replicas = sum(1 for r in here if r.state != "draining")
    return dep


def _editable(
    dep: resources_pb2.Deployment, change: resources_pb2.Deployment
) -> resources_pb2.Deployment:
    """The current deployment in the one nodepool spelling a patch can be merged into."""
    current = resources_pb2.Deployment()
    current.CopyFrom(dep)
    current.ClearField("nodepools")
    if change.nodepools:
        current.ClearField("deployment_nodepools")
    if change.HasField("worker") or change.HasField("desired_worker"):
        current.ClearField("worker")
        current.ClearField("desired_worker")
    return current


def _limits(call: Call) -> Limits:
    return Limits(call.runtime.quotas, call.runtime.packages)


def _orchestrating(call: Call) -> ProviderRegistry | None:
    """The providers whose nodepools this server runs replicas in (None: it runs none)."""
    return call.providers if call.runtime.orchestrator is not None else None


@router.rpc("PostDeployments")
def post(
    request: service_pb2.PostDeploymentsRequest, call: Call
) -> service_pb2.MultiDeploymentResponse:
    owner = call.owner(request.user_app_id.user_id)
    if not request.deployments:
        raise errors.InvalidRequest("deployments is empty; send at least one deployment")
    rows = []
    for i, dep in enumerate(request.deployments):
        where = f"deployments[{i}]"
        spec = spec_from_proto(dep, DeploymentSpec, where=where, error=errors.DeploymentInvalid)
        call.owner(spec.user_id or owner)
        rows.append(
            service.create_deployment(
                call.session, owner, spec, where, _limits(call), _orchestrating(call)
            )
        )
    return service_pb2.MultiDeploymentResponse(deployments=[to_proto(r) for r in rows])


@router.rpc("GetDeployment")
def get(
    request: service_pb2.GetDeploymentRequest, call: Call
) -> service_pb2.SingleDeploymentResponse:
    owner = call.owner(request.user_app_id.user_id)
    row = service.get_deployment(call.session, owner, request.deployment_id)
    return service_pb2.SingleDeploymentResponse(deployment=to_proto(row, call.live))


@router.rpc("ListDeployments")
def list_(
    request: service_pb2.ListDeploymentsRequest, call: Call
) -> service_pb2.MultiDeploymentResponse:
    owner = call.owner(request.user_app_id.user_id)
    where = service.ListFilter(
        nodepool_id=request.nodepool_id,
        compute_cluster_id=request.compute_cluster_id,
        model_version_ids=tuple(request.model_version_ids),
    )
    rows = service.list_deployments(call.session, owner, where, page(request))
    live = call.live
    return service_pb2.MultiDeploymentResponse(deployments=[to_proto(r, live) for r in rows])


@router.rpc("PatchDeployments")
def patch(
    request: service_pb2.PatchDeploymentsRequest, call: Call
) -> service_pb2.MultiDeploymentResponse:
    owner = call.owner(request.user_app_id.user_id)
    rows = []
    for i, change in enumerate(request.deployments):
        where = f"deployments[{i}]"
        current = to_proto(service.get_deployment(call.session, owner, change.id))
        spec = patched(
            _editable(current, change),
            change,
            request.action,
            DeploymentSpec,
            where=where,
            error=errors.DeploymentInvalid,
        )
        rows.append(
            service.update_deployment(
                call.session, owner, spec, where, _limits(call), _orchestrating(call)
            )
        )
    return service_pb2.MultiDeploymentResponse(deployments=[to_proto(r) for r in rows])


@router.rpc("DeleteDeployments")
def delete(request: service_pb2.DeleteDeploymentsRequest, call: Call) -> status_pb2.BaseResponse:
    owner = call.owner(request.user_app_id.user_id)
    deleted = service.delete_deployments(call.session, owner, list(request.ids))
    return done(call, "removed deployments: " + ", ".join(deleted))
