"""gRPC handlers for nodepools."""

from __future__ import annotations

from typing import TYPE_CHECKING

from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from clarifai_grpc.grpc.api.status import status_pb2

from orchard import errors
from orchard.configs import NodepoolSpec, spec_from_proto
from orchard.ids import PoolKey
from orchard.providers import ProviderRegistry
from orchard.server.convert import done, fill, page, patched, stamp
from orchard.server.rpc import Call, Router
from orchard.services import compute_clusters as clusters
from orchard.services import nodepools as service
from orchard.store.models import NodepoolRow

if TYPE_CHECKING:
    from orchard.orchestration.view import LiveView

router = Router()
READY = resources_pb2.Nodepool.NodepoolStatus.NODEPOOL_STATUS_READY
ERROR = resources_pb2.Nodepool.NodepoolStatus.NODEPOOL_STATUS_ERROR


def to_proto(
    row: NodepoolRow, live: LiveView | None = None, providers: ProviderRegistry | None = None
) -> resources_pb2.Nodepool:
    """The nodepool; with ``providers``, its status is ERROR with the reason when its provider
    knows why it cannot run replicas now (a Ray cluster that is unreachable...)."""
    np = resources_pb2.Nodepool()
    fill(np, row.spec)
    np.id = row.id
    np.compute_cluster.id, np.compute_cluster.user_id = row.compute_cluster_id, row.user_id
    np.min_instances, np.max_instances = row.min_instances, row.max_instances
    np.enforced_min_instances, np.enforced_max_instances = row.min_instances, row.max_instances
    np.status = READY
    if providers is not None:
        problem = _problem(row, providers)
        if problem:
            np.status, np.status_description = ERROR, problem
    if live is not None:
        np.node_count = live.nodepools.get(PoolKey(row.user_id, row.compute_cluster_id, row.id), 0)
    stamp(np, row)
    return np


def _problem(row: NodepoolRow, providers: ProviderRegistry) -> str:
    cluster = row.compute_cluster
    provider = providers.get(cluster.cloud_provider)
    if provider is None:
        return f"provider {cluster.cloud_provider!r} is not a provider of this server any more"
    return provider.problem(service.info_of(row))


def _cluster_id(request_cluster: str, np: resources_pb2.Nodepool, where: str) -> str:
    named = np.compute_cluster.id
    if request_cluster and named and named != request_cluster:
        raise errors.NodepoolInvalid(
            f"{where}.compute_cluster.id is {named!r} but the request is for compute cluster "
            f"{request_cluster!r}; make them agree"
        )
    cluster_id = request_cluster or named
    if not cluster_id:
        raise errors.NodepoolInvalid(f"{where}: no compute cluster given; set compute_cluster_id")
    return cluster_id


@router.rpc("PostNodepools")
def post(
    request: service_pb2.PostNodepoolsRequest, call: Call
) -> service_pb2.MultiNodepoolResponse:
    owner = call.owner(request.user_app_id.user_id)
    if not request.nodepools:
        raise errors.InvalidRequest("nodepools is empty; send at least one nodepool")
    rows = []
    for i, np in enumerate(request.nodepools):
        where = f"nodepools[{i}]"
        call.owner(np.compute_cluster.user_id or owner)
        cluster = clusters.get_compute_cluster(
            call.session, owner, _cluster_id(request.compute_cluster_id, np, where)
        )
        spec = spec_from_proto(np, NodepoolSpec, where=where, error=errors.NodepoolInvalid)
        rows.append(service.create_nodepool(call.session, cluster, spec, call.providers, where))
    return service_pb2.MultiNodepoolResponse(nodepools=[to_proto(r) for r in rows])


@router.rpc("GetNodepool")
def get(request: service_pb2.GetNodepoolRequest, call: Call) -> service_pb2.SingleNodepoolResponse:
    owner = call.owner(request.user_app_id.user_id)
    row = service.find_nodepool(
        call.session, owner, request.compute_cluster_id, request.nodepool_id
    )
    return service_pb2.SingleNodepoolResponse(nodepool=to_proto(row, call.live, call.providers))


@router.rpc("ListNodepools")
def list_(
    request: service_pb2.ListNodepoolsRequest, call: Call
) -> service_pb2.MultiNodepoolResponse:
    owner = call.owner(request.user_app_id.user_id)
    if request.compute_cluster_id:
        clusters.get_compute_cluster(call.session, owner, request.compute_cluster_id)
    rows = service.list_nodepools(call.session, owner, request.compute_cluster_id, page(request))
    live = call.live
    return service_pb2.MultiNodepoolResponse(
        nodepools=[to_proto(r, live, call.providers) for r in rows]
    )


@router.rpc("PatchNodepools")
def patch(
    request: service_pb2.PatchNodepoolsRequest, call: Call
) -> service_pb2.MultiNodepoolResponse:
    owner = call.owner(request.user_app_id.user_id)
    rows = []
    for i, change in enumerate(request.nodepools):
        where = f"nodepools[{i}]"
        cluster = clusters.get_compute_cluster(
            call.session, owner, _cluster_id(request.compute_cluster_id, change, where)
        )
        current = to_proto(service.get_nodepool(call.session, owner, cluster.id, change.id))
        spec = patched(
            current, change, request.action, NodepoolSpec, where=where, error=errors.NodepoolInvalid
        )
        rows.append(service.update_nodepool(call.session, cluster, spec, call.providers, where))
    return service_pb2.MultiNodepoolResponse(nodepools=[to_proto(r) for r in rows])


@router.rpc("DeleteNodepools")
def delete(request: service_pb2.DeleteNodepoolsRequest, call: Call) -> status_pb2.BaseResponse:
    owner = call.owner(request.user_app_id.user_id)
    if not request.ids:
        raise errors.InvalidRequest("no nodepool ids given; pass at least one id")
    rows = [
        service.find_nodepool(call.session, owner, request.compute_cluster_id, np_id)
        for np_id in dict.fromkeys(request.ids)
    ]
    return done(call, service.delete_nodepool_rows(call.session, rows).describe())
