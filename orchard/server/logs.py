"""``ListLogEntries``: a model version's build log (``builder``), its replicas' output
(``runner``) and the orchestrator's events about them (``runner.events``); the last two can be
narrowed to a compute cluster, nodepool and runner. A request names the model version
(``model_id`` and ``model_version_id``), or only a runner, as the official CLI's
``deployment logs`` and ``model logs`` do: the runner's version is meant."""

from __future__ import annotations

from clarifai_grpc.grpc.api import resources_pb2, service_pb2

from orchard import errors
from orchard.server.convert import page
from orchard.server.rpc import Call, Router
from orchard.services import logs
from orchard.services import models as model_service

router = Router()


def _log_ref(request: service_pb2.ListLogEntriesRequest, call: Call, owner: str) -> logs.LogRef:
    where = (request.compute_cluster_id, request.nodepool_id, request.runner_id)
    if request.model_id and request.model_version_id:
        model = model_service.find_model(
            call.session, owner, request.user_app_id.app_id, request.model_id
        )
        model_service.get_model_version(call.session, model, request.model_version_id)
        return logs.LogRef(owner, model.id, request.model_version_id, request.log_type, *where)
    if request.runner_id:
        return logs.runner_log_ref(call.session, owner, request.log_type, *where)
    raise errors.InvalidRequest(
        "name whose log: set model_id and model_version_id, or runner_id (list runners with "
        "Nodepool.list_runners() in either SDK)"
    )


@router.rpc("ListLogEntries")
def list_(
    request: service_pb2.ListLogEntriesRequest, call: Call
) -> service_pb2.MultiLogEntryResponse:
    owner = call.owner(request.user_app_id.user_id)
    if request.log_type not in logs.LOG_TYPES:
        raise errors.InvalidRequest(
            f"log_type {request.log_type!r} is not kept by Orchard; "
            f"use one of: {', '.join(logs.LOG_TYPES)}"
        )
    wanted = page(request)
    ref = _log_ref(request, call, owner)
    rows = logs.list_logs(call.session, ref, wanted)
    return service_pb2.MultiLogEntryResponse(
        log_entries=[
            resources_pb2.LogEntry(message=r.message, log_type=r.log_type, url=f"log-entry/{r.id}")
            for r in rows
        ],
        page=wanted.page,
        per_page=wanted.per_page,
    )
