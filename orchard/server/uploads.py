"""``PostModelVersionsUpload``: receive a model package and queue its build.

The client sends ``upload_config`` first (the model, the version's fields, ``total_size``),
then the archive in ``content_part`` messages. The server answers each message with
UPLOAD_IN_PROGRESS and the percentage received (the first answer carries the new version's
id), and the last with MODEL_BUILDING once the archive is stored. A stream that ends early
or sends more than it announced fails the version (MODEL_UPLOADING_FAILED) and stores nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from clarifai_grpc.grpc.api import service_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2 as sc
from clarifai_grpc.grpc.api.status import status_pb2
from sqlalchemy.orm import Session

from orchard import errors
from orchard.ids import VersionRef
from orchard.server.convert import as_dict
from orchard.server.rpc import Router, StreamCall
from orchard.services import models as model_service
from orchard.services.packages import Upload

router = Router()
Response = service_pb2.PostModelVersionsUploadResponse
# Fields of the version that the server sets itself.
_OUTPUT = {"id", "user_id", "app_id", "created_at", "modified_at", "completed_at", "status"}
_BIG_WRITE = 1 << 20


def _response(
    ref: VersionRef, code: int, description: str, remaining: int, percent: int = 0
) -> service_pb2.PostModelVersionsUploadResponse:
    status = status_pb2.Status(code=code, description=description, percent_completed=percent)
    return Response(status=status, bytes_remaining=remaining, model_version_id=ref.version_id)


async def _config(
    requests: AsyncIterator[Any], call: StreamCall
) -> service_pb2.PostModelVersionsUploadConfig:
    first = await anext(requests, None)
    if first is None or not first.HasField("upload_config"):
        raise errors.InvalidRequest(
            "send upload_config first, then the package in content_part messages"
        )
    config = first.upload_config
    if config.total_size <= 0:
        raise errors.InvalidRequest("upload_config.total_size must be the package size in bytes")
    return config


def _new_version(
    config: service_pb2.PostModelVersionsUploadConfig, owner: str
) -> Callable[[Session], VersionRef]:
    spec = {k: v for k, v in as_dict(config.model_version).items() if k not in _OUTPUT}

    def create(session: Session) -> VersionRef:
        model = model_service.find_model(session, owner, config.user_app_id.app_id, config.model_id)
        row = model_service.create_model_version(
            session, model, spec, status_code=sc.MODEL_UPLOADING
        )
        return VersionRef.of(row)

    return create


async def _receive(
    requests: AsyncIterator[Any], upload: Upload, total: int, ref: VersionRef
) -> AsyncIterator[Any]:
    async for request in requests:
        if not request.HasField("content_part"):
            raise errors.InvalidRequest("after upload_config, send only content_part messages")
        data = request.content_part.data
        if len(data) > _BIG_WRITE:
            await asyncio.to_thread(upload.write, data)
        else:
            upload.write(data)
        if upload.size > total:
            raise errors.InvalidRequest(
                f"received {upload.size} bytes but upload_config.total_size announced {total}"
            )
        yield _response(
            ref,
            sc.UPLOAD_IN_PROGRESS,
            "Uploading",
            total - upload.size,
            percent=int(100 * upload.size / total),
        )
    if upload.size != total:
        raise errors.InvalidRequest(
            f"the upload ended after {upload.size} of {total} bytes; upload again"
        )


@router.stream("PostModelVersionsUpload")
async def upload(requests: AsyncIterator[Any], call: StreamCall) -> AsyncIterator[Any]:
    config = await _config(requests, call)
    owner = call.owner(config.user_app_id.user_id)
    ref = await call.db(_new_version(config, owner))
    yield _response(ref, sc.UPLOAD_IN_PROGRESS, "Upload started", config.total_size)
    incoming = call.runtime.packages.receive(ref.version_id)
    try:
        async for progress in _receive(requests, incoming, config.total_size, ref):
            yield progress
        digest = await asyncio.to_thread(incoming.finish)
    except BaseException as exc:
        incoming.abort()
        reason = exc.message if isinstance(exc, errors.OrchardError) else "the upload failed"
        await call.db(
            lambda s: model_service.set_version_status(s, ref, sc.MODEL_UPLOADING_FAILED, reason)
        )
        raise
    await call.db(
        lambda s: model_service.set_version_status(
            s, ref, sc.MODEL_BUILDING, "Building the model's environment", package_digest=digest
        )
    )
    call.runtime.builds.submit(ref)
    yield _response(ref, sc.MODEL_BUILDING, "Upload complete; building", 0, percent=100)
