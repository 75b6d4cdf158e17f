"""gRPC handlers for apps, and the listings of what an app holds that Orchard does not keep
(workflows, datasets, concepts): empty, so that the official SDK's listings work."""

from __future__ import annotations

from typing import Any

from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from clarifai_grpc.grpc.api.status import status_pb2

from orchard import errors
from orchard.server.convert import as_dict, done, fill, page, stamp
from orchard.server.rpc import Call, Router
from orchard.services import apps as service
from orchard.store.models import AppRow

router = Router()


def to_proto(row: AppRow) -> resources_pb2.App:
    app = fill(resources_pb2.App(), row.spec)
    assert isinstance(app, resources_pb2.App)
    app.id, app.user_id = row.id, row.user_id
    stamp(app, row)
    return app


@router.rpc("PostApps")
def post(request: service_pb2.PostAppsRequest, call: Call) -> service_pb2.MultiAppResponse:
    owner = call.owner(request.user_app_id.user_id)
    if not request.apps:
        raise errors.InvalidRequest("apps is empty; send at least one app")
    rows = []
    for app in request.apps:
        spec = {k: v for k, v in as_dict(app).items() if k in service.APP_FIELDS}
        rows.append(service.create_app(call.session, owner, app.id, spec))
    return service_pb2.MultiAppResponse(apps=[to_proto(r) for r in rows])


@router.rpc("GetApp")
def get(request: service_pb2.GetAppRequest, call: Call) -> service_pb2.SingleAppResponse:
    owner = call.owner(request.user_app_id.user_id)
    row = service.get_app(call.session, owner, request.user_app_id.app_id)
    return service_pb2.SingleAppResponse(app=to_proto(row))


@router.rpc("ListApps")
def list_(request: service_pb2.ListAppsRequest, call: Call) -> service_pb2.MultiAppResponse:
    owner = call.owner(request.user_app_id.user_id)
    rows = service.list_apps(call.session, owner, page(request))
    return service_pb2.MultiAppResponse(apps=[to_proto(r) for r in rows])


@router.rpc("DeleteApp")
def delete(request: service_pb2.DeleteAppRequest, call: Call) -> status_pb2.BaseResponse:
    owner = call.owner(request.user_app_id.user_id)
    service.delete_app(call.session, owner, request.user_app_id.app_id)
    return done(call, f"removed app {request.user_app_id.app_id!r} and its models")


@router.rpc("PatchApp")
def patch_one(request: service_pb2.PatchAppRequest, call: Call) -> service_pb2.SingleAppResponse:
    owner = call.owner(request.user_app_id.user_id)
    app_id = request.app.id or request.user_app_id.app_id
    row = service.patch_app(call.session, owner, app_id, as_dict(request.app), request.action)
    return service_pb2.SingleAppResponse(app=to_proto(row))


@router.rpc("PatchApps")
def patch(request: service_pb2.PatchAppsRequest, call: Call) -> service_pb2.MultiAppResponse:
    owner = call.owner(request.user_app_id.user_id)
    rows = [
        service.patch_app(call.session, owner, app.id, as_dict(app), request.action)
        for app in request.apps
    ]
    return service_pb2.MultiAppResponse(apps=[to_proto(r) for r in rows])


def _app_of(request: Any, call: Call) -> None:
    """Check that the request's app is the caller's (a listing of it is empty)."""
    owner = call.owner(request.user_app_id.user_id)
    if request.user_app_id.app_id:
        service.get_app(call.session, owner, request.user_app_id.app_id)


@router.rpc("ListWorkflows")
def list_workflows(
    request: service_pb2.ListWorkflowsRequest, call: Call
) -> service_pb2.MultiWorkflowResponse:
    _app_of(request, call)
    return service_pb2.MultiWorkflowResponse()


@router.rpc("ListDatasets")
def list_datasets(
    request: service_pb2.ListDatasetsRequest, call: Call
) -> service_pb2.MultiDatasetResponse:
    _app_of(request, call)
    return service_pb2.MultiDatasetResponse()


@router.rpc("ListConcepts")
def list_concepts(
    request: service_pb2.ListConceptsRequest, call: Call
) -> service_pb2.MultiConceptResponse:
    _app_of(request, call)
    return service_pb2.MultiConceptResponse()
