"""gRPC handlers for apps."""

from __future__ import annotations

from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from clarifai_grpc.grpc.api.status import status_pb2

from orchard import errors
from orchard.server.convert import as_dict, done, fill, page, stamp
from orchard.server.rpc import Call, Router
from orchard.services import apps as service
from orchard.store.models import AppRow

router = Router()
_KEPT = ("name", "description", "default_language", "metadata", "visibility", "notes")


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
        spec = {k: v for k, v in as_dict(app).items() if k in _KEPT}
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
