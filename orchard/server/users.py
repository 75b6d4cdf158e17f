"""gRPC handlers for the caller's user and PATs (the API's "keys" of type personal access token)."""

from __future__ import annotations

from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from clarifai_grpc.grpc.api.status import status_pb2

from orchard import errors
from orchard.server.convert import done, page, stamp, timestamp
from orchard.server.rpc import Call, Router
from orchard.services import users as service
from orchard.store.models import PatRow

router = Router()
PAT_TYPE = "personal_access_token"


def _key(row: PatRow, token: str = "") -> resources_pb2.Key:
    """A PAT as the API's Key. The secret is its id, and only at creation; afterwards the id
    is the PAT's public handle (used to delete it)."""
    key = resources_pb2.Key(
        id=token or row.id, type=PAT_TYPE, description=row.description or f"...{row.last4}"
    )
    stamp(key, row)
    return key


@router.rpc("GetUser")
def get_user(request: service_pb2.GetUserRequest, call: Call) -> service_pb2.SingleUserResponse:
    row = service.get_user(call.session, call.owner(request.user_app_id.user_id))
    user = resources_pb2.User(id=row.id, created_at=timestamp(row.created_at))
    return service_pb2.SingleUserResponse(user=user)


@router.rpc("ListSecrets")
def list_secrets(
    request: service_pb2.ListSecretsRequest, call: Call
) -> service_pb2.MultiSecretResponse:
    """Orchard keeps no secrets for models: an empty list, so that the official SDK lists."""
    service.get_user(call.session, call.owner(request.user_app_id.user_id))
    return service_pb2.MultiSecretResponse()


@router.rpc("PostKeys")
def post_keys(request: service_pb2.PostKeysRequest, call: Call) -> service_pb2.MultiKeyResponse:
    owner = call.owner(request.user_app_id.user_id)
    if len(request.keys) != 1:
        raise errors.InvalidRequest("send exactly one key in PostKeys")
    key = request.keys[0]
    if key.type and key.type != PAT_TYPE:
        raise errors.InvalidRequest(
            f"key type {key.type!r} is not supported; Orchard issues {PAT_TYPE!r} keys only"
        )
    row, token = service.create_pat(call.session, owner, description=key.description)
    return service_pb2.MultiKeyResponse(keys=[_key(row, token)])


@router.rpc("ListKeys")
def list_keys(request: service_pb2.ListKeysRequest, call: Call) -> service_pb2.MultiKeyResponse:
    owner = call.owner(request.user_app_id.user_id)
    rows = service.list_pats(call.session, owner, page(request))
    return service_pb2.MultiKeyResponse(keys=[_key(r) for r in rows])


@router.rpc("DeleteKey")
def delete_key(request: service_pb2.DeleteKeyRequest, call: Call) -> status_pb2.BaseResponse:
    owner = call.owner(request.user_app_id.user_id)
    service.delete_pat(call.session, owner, request.key_id)
    return done(call, f"removed PAT {request.key_id!r}")
