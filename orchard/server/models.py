"""gRPC handlers for models, model versions (versions without an uploaded package) and the
model types Orchard names."""

from __future__ import annotations

from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from clarifai_grpc.grpc.api.status import status_pb2

from orchard import errors
from orchard.server.convert import as_dict, done, fill, page, stamp
from orchard.server.rpc import Call, Router
from orchard.services import models as service
from orchard.store.models import ModelRow, ModelVersionRow

router = Router()
_MODEL_OUTPUT = {
    "id",
    "user_id",
    "app_id",
    "created_at",
    "modified_at",
    "model_version",
    "version_count",
    "replica_count",
    "is_starred",
    "star_count",
    "creator",
}
_VERSION_OUTPUT = {"id", "user_id", "app_id", "created_at", "modified_at", "completed_at", "status"}


def version_to_proto(row: ModelVersionRow) -> resources_pb2.ModelVersion:
    version = resources_pb2.ModelVersion()
    fill(version, row.spec)
    version.id, version.user_id, version.app_id = row.id, row.user_id, row.app_id
    version.status.code = row.status_code
    version.status.description = row.status_description
    if row.package_digest:
        # Where runners on the server's machine find the version (``orchard runner``).
        version.metadata.update(
            {"orchard": {"package_sha256": row.package_digest, "environment": row.env_key}}
        )
    stamp(version, row)
    return version


def to_proto(row: ModelRow, version: ModelVersionRow | None) -> resources_pb2.Model:
    model = resources_pb2.Model()
    fill(model, row.spec)
    model.id, model.user_id, model.app_id = row.id, row.user_id, row.app_id
    model.model_type_id = row.model_type_id
    model.name = model.name or row.id  # the official SDK's listings read it
    if version is not None:
        model.model_version.CopyFrom(version_to_proto(version))
    stamp(model, row)
    return model


def _model(
    call: Call,
    request: service_pb2.GetModelRequest
    | service_pb2.PostModelVersionsRequest
    | service_pb2.ListModelVersionsRequest
    | service_pb2.GetModelVersionRequest
    | service_pb2.DeleteModelRequest
    | service_pb2.DeleteModelVersionRequest
    | service_pb2.PatchModelVersionsRequest,
) -> ModelRow:
    owner = call.owner(request.user_app_id.user_id)
    return service.find_model(call.session, owner, request.user_app_id.app_id, request.model_id)


@router.rpc("PostModels")
def post(request: service_pb2.PostModelsRequest, call: Call) -> service_pb2.SingleModelResponse:
    owner = call.owner(request.user_app_id.user_id)
    models = list(request.models) or ([request.model] if request.HasField("model") else [])
    if len(models) != 1:
        raise errors.InvalidRequest("send exactly one model in PostModels")
    model = models[0]
    spec = {k: v for k, v in as_dict(model).items() if k not in _MODEL_OUTPUT}
    row = service.create_model(
        call.session, owner, request.user_app_id.app_id or model.app_id, model.id, spec
    )
    return service_pb2.SingleModelResponse(model=to_proto(row, None))


@router.rpc("GetModel")
def get(request: service_pb2.GetModelRequest, call: Call) -> service_pb2.SingleModelResponse:
    row = _model(call, request)
    if request.version_id:
        version: ModelVersionRow | None = service.get_model_version(
            call.session, row, request.version_id
        )
    else:
        version = service.latest_model_version(call.session, row)
    return service_pb2.SingleModelResponse(model=to_proto(row, version))


@router.rpc("ListModels")
def list_(request: service_pb2.ListModelsRequest, call: Call) -> service_pb2.MultiModelResponse:
    owner = call.owner(request.user_app_id.user_id)
    rows = service.list_models(call.session, owner, request.user_app_id.app_id, page(request))
    return service_pb2.MultiModelResponse(
        models=[to_proto(r, service.latest_model_version(call.session, r)) for r in rows]
    )


@router.rpc("PatchModels")
def patch(request: service_pb2.PatchModelsRequest, call: Call) -> service_pb2.MultiModelResponse:
    owner = call.owner(request.user_app_id.user_id)
    rows = []
    for model in request.models:
        row = service.find_model(call.session, owner, request.user_app_id.app_id, model.id)
        change = {k: v for k, v in as_dict(model).items() if k not in _MODEL_OUTPUT}
        rows.append(service.patch_model(call.session, row, change, request.action))
    return service_pb2.MultiModelResponse(
        models=[to_proto(r, service.latest_model_version(call.session, r)) for r in rows]
    )


@router.rpc("DeleteModel")
def delete(request: service_pb2.DeleteModelRequest, call: Call) -> status_pb2.BaseResponse:
    row = _model(call, request)
    service.delete_models(call.session, row.user_id, row.app_id, [row.id])
    return done(call, f"removed model {row.id!r} and its versions")


@router.rpc("DeleteModels")
def delete_many(request: service_pb2.DeleteModelsRequest, call: Call) -> status_pb2.BaseResponse:
    owner = call.owner(request.user_app_id.user_id)
    app_id = request.user_app_id.app_id
    ids = list(request.ids)
    if request.delete_all:
        ids = service.all_model_ids(call.session, owner, app_id) if app_id else []
        if not ids:
            return done(call, "no models to remove")
    deleted = service.delete_models(call.session, owner, app_id, ids)
    return done(call, "removed models and their versions: " + ", ".join(deleted))


@router.rpc("PostModelVersions")
def post_versions(
    request: service_pb2.PostModelVersionsRequest, call: Call
) -> service_pb2.SingleModelResponse:
    row = _model(call, request)
    if len(request.model_versions) > 1:
        raise errors.InvalidRequest("send at most one model version in PostModelVersions")
    spec = {}
    if request.model_versions:
        spec = {
            k: v for k, v in as_dict(request.model_versions[0]).items() if k not in _VERSION_OUTPUT
        }
    if request.description:
        spec["description"] = request.description
    version = service.create_model_version(call.session, row, spec)
    return service_pb2.SingleModelResponse(model=to_proto(row, version))


@router.rpc("GetModelVersion")
def get_version(
    request: service_pb2.GetModelVersionRequest, call: Call
) -> service_pb2.SingleModelVersionResponse:
    model = _model(call, request)
    version = service.get_version_or_latest(call.session, model, request.version_id)
    return service_pb2.SingleModelVersionResponse(model_version=version_to_proto(version))


@router.rpc("PatchModelVersions")
def patch_versions(
    request: service_pb2.PatchModelVersionsRequest, call: Call
) -> service_pb2.MultiModelVersionResponse:
    model = _model(call, request)
    rows = []
    for version in request.model_versions:
        change = {k: v for k, v in as_dict(version).items() if k not in _VERSION_OUTPUT}
        rows.append(
            service.patch_model_version(call.session, model, version.id, change, request.action)
        )
    return service_pb2.MultiModelVersionResponse(model_versions=[version_to_proto(r) for r in rows])


@router.rpc("DeleteModelVersion")
def delete_version(
    request: service_pb2.DeleteModelVersionRequest, call: Call
) -> status_pb2.BaseResponse:
    model = _model(call, request)
    service.delete_model_version(call.session, model, request.version_id)
    return done(call, f"removed version {request.version_id!r} of model {model.id!r}")


@router.rpc("ListModelVersions")
def list_versions(
    request: service_pb2.ListModelVersionsRequest, call: Call
) -> service_pb2.MultiModelVersionResponse:
    rows = service.list_model_versions(call.session, _model(call, request), page(request))
    return service_pb2.MultiModelVersionResponse(model_versions=[version_to_proto(r) for r in rows])


def model_type_to_proto(model_type: service.ModelType) -> resources_pb2.ModelType:
    return resources_pb2.ModelType(
        id=model_type.id,
        title=model_type.title,
        description=f"{model_type.title} models",
        input_fields=list(model_type.input_fields),
        output_fields=list(model_type.output_fields),
        creatable=True,
    )


@router.rpc("ListModelTypes")
def list_types(
    request: service_pb2.ListModelTypesRequest, call: Call
) -> service_pb2.MultiModelTypeResponse:
    return service_pb2.MultiModelTypeResponse(
        model_types=[model_type_to_proto(t) for t in service.MODEL_TYPES]
    )


@router.rpc("GetModelType")
def get_type(
    request: service_pb2.GetModelTypeRequest, call: Call
) -> service_pb2.SingleModelTypeResponse:
    model_type = service.get_model_type(request.model_type_id)
    return service_pb2.SingleModelTypeResponse(model_type=model_type_to_proto(model_type))
