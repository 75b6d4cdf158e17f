"""gRPC handlers for compute clusters."""

from __future__ import annotations

from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from clarifai_grpc.grpc.api.status import status_pb2

from orchard import errors
from orchard.configs import ComputeClusterSpec, spec_from_proto
from orchard.server.convert import done, fill, page, patched, stamp
from orchard.server.rpc import Call, Router
from orchard.services import compute_clusters as service
from orchard.store.models import ComputeClusterRow

router = Router()


def to_proto(row: ComputeClusterRow) -> resources_pb2.ComputeCluster:
    cc = resources_pb2.ComputeCluster()
    fill(cc, row.spec)
    cc.id, cc.user_id, cc.region, cc.cluster_type = (
        row.id,
        row.user_id,
        row.region,
        row.cluster_type,
    )
    cc.cloud_provider.id = row.cloud_provider
    stamp(cc, row)
    return cc


def _specs(
    clusters: list[resources_pb2.ComputeCluster], call: Call, owner: str
) -> list[tuple[str, ComputeClusterSpec]]:
    if not clusters:
        raise errors.InvalidRequest("compute_clusters is empty; send at least one cluster")
    specs = []
    for i, cc in enumerate(clusters):
        where = f"compute_clusters[{i}]"
        spec = spec_from_proto(
            cc, ComputeClusterSpec, where=where, error=errors.ComputeClusterInvalid
        )
        call.owner(spec.user_id or owner)
        specs.append((where, spec))
    return specs


@router.rpc("PostComputeClusters")
def post(
    request: service_pb2.PostComputeClustersRequest, call: Call
) -> service_pb2.MultiComputeClusterResponse:
    owner = call.owner(request.user_app_id.user_id)
    rows = [
        service.create_compute_cluster(call.session, owner, spec, call.providers, where)
        for where, spec in _specs(list(request.compute_clusters), call, owner)
    ]
    return service_pb2.MultiComputeClusterResponse(compute_clusters=[to_proto(r) for r in rows])


@router.rpc("GetComputeCluster")
def get(
    request: service_pb2.GetComputeClusterRequest, call: Call
) -> service_pb2.SingleComputeClusterResponse:
    owner = call.owner(request.user_app_id.user_id)
    row = service.get_compute_cluster(call.session, owner, request.compute_cluster_id)
    return service_pb2.SingleComputeClusterResponse(compute_cluster=to_proto(row))


@router.rpc("ListComputeClusters")
def list_(
    request: service_pb2.ListComputeClustersRequest, call: Call
) -> service_pb2.MultiComputeClusterResponse:
    owner = call.owner(request.user_app_id.user_id)
    rows = service.list_compute_clusters(call.session, owner, page(request))
    return service_pb2.MultiComputeClusterResponse(compute_clusters=[to_proto(r) for r in rows])


@router.rpc("PatchComputeClusters")
def patch(
    request: service_pb2.PatchComputeClustersRequest, call: Call
) -> service_pb2.MultiComputeClusterResponse:
    owner = call.owner(request.user_app_id.user_id)
    rows = []
    for i, change in enumerate(request.compute_clusters):
        where = f"compute_clusters[{i}]"
        current = to_proto(service.get_compute_cluster(call.session, owner, change.id))
        spec = patched(
            current,
            change,
            request.action,
            ComputeClusterSpec,
            where=where,
            error=errors.ComputeClusterInvalid,
        )
        rows.append(
            service.update_compute_cluster(call.session, owner, spec, call.providers, where)
        )
    return service_pb2.MultiComputeClusterResponse(compute_clusters=[to_proto(r) for r in rows])


@router.rpc("DeleteComputeClusters")
def delete(
    request: service_pb2.DeleteComputeClustersRequest, call: Call
) -> status_pb2.BaseResponse:
    owner = call.owner(request.user_app_id.user_id)
    removal = service.delete_compute_clusters(call.session, owner, list(request.ids))
    return done(call, removal.describe())
