"""gRPC handlers for runners (CRUD). The work stream, ProcessRunnerItems, is in
``orchard.server.work``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from clarifai_grpc.grpc.api.status import status_pb2

from orchard import errors
from orchard.configs import RunnerSpec, spec_from_proto
from orchard.server.convert import done, fill, page, stamp
from orchard.server.rpc import Call, Router
from orchard.services import nodepools
from orchard.services import runners as service
from orchard.store.models import RunnerRow

if TYPE_CHECKING:
    from orchard.orchestration.view import LiveView

router = Router()


def to_proto(row: RunnerRow, live: LiveView | None = None) -> resources_pb2.Runner:
    runner = resources_pb2.Runner()
    fill(runner, row.spec)
    runner.id, runner.num_replicas = row.id, row.num_replicas
    runner.worker.model.CopyFrom(
        resources_pb2.Model(
            id=row.model_id,
            app_id=row.app_id,
            user_id=row.model_user_id,
            model_version=resources_pb2.ModelVersion(id=row.model_version_id),
        )
    )
    runner.nodepool.id = row.nodepool_id
    runner.nodepool.compute_cluster.id = row.compute_cluster_id
    runner.nodepool.compute_cluster.user_id = row.user_id
    if live is not None and row.id in live.runners:
        runner.num_replicas = live.runners[row.id]
        runner.runner_metrics.pods_running = live.runners[row.id]
    stamp(runner, row)
    return runner


@router.rpc("PostRunners")
def post(request: service_pb2.PostRunnersRequest, call: Call) -> service_pb2.MultiRunnerResponse:
    owner = call.owner(request.user_app_id.user_id)
    if not request.runners:
        raise errors.InvalidRequest("runners is empty; send at least one runner")
    pool = nodepools.find_nodepool(
        call.session, owner, request.compute_cluster_id, request.nodepool_id
    )
    rows = []
    for i, runner in enumerate(request.runners):
        where = f"runners[{i}]"
        spec = spec_from_proto(runner, RunnerSpec, where=where, error=errors.RunnerInvalid)
        rows.append(service.create_runner(call.session, pool, spec, where))
    return service_pb2.MultiRunnerResponse(runners=[to_proto(r) for r in rows])


@router.rpc("GetRunner")
def get(request: service_pb2.GetRunnerRequest, call: Call) -> service_pb2.SingleRunnerResponse:
    owner = call.owner(request.user_app_id.user_id)
    return service_pb2.SingleRunnerResponse(
        runner=to_proto(service.get_runner(call.session, owner, request.runner_id), call.live)
    )


@router.rpc("ListRunners")
def list_(request: service_pb2.ListRunnersRequest, call: Call) -> service_pb2.MultiRunnerResponse:
    owner = call.owner(request.user_app_id.user_id)
    rows = service.list_runners(
        call.session,
        owner,
        request.compute_cluster_id,
        request.nodepool_id,
        tuple(request.model_version_ids),
        page(request),
    )
    live = call.live
    return service_pb2.MultiRunnerResponse(runners=[to_proto(r, live) for r in rows])


@router.rpc("DeleteRunners")
def delete(request: service_pb2.DeleteRunnersRequest, call: Call) -> status_pb2.BaseResponse:
    owner = call.owner(request.user_app_id.user_id)
    deleted = service.delete_runners(call.session, owner, list(request.ids))
    return done(call, "removed runners: " + ", ".join(deleted))
