"""The pages' live streams: logs that follow (server-sent events over ``ListLogEntries``) and
the "try it" box's prediction, whose outputs are sent on as they arrive (one JSON per line)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2
from google.protobuf import json_format
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from orchard.server.http.dashboard.calls import Api, ApiError
from orchard.server.http.dashboard.web import Dashboard, Refused, json_body

POLL_SECONDS = 1.0
STREAM_SECONDS = 300.0  # a page's EventSource reconnects after, from where it was
LOG_PAGE = 200
METHOD_KEY = "_method_name"  # Input.data.metadata: the model method to call
STREAMING = resources_pb2.RunnerMethodType.UNARY_STREAMING
UNARY = resources_pb2.RunnerMethodType.UNARY_UNARY
TRY_SECONDS = 120.0


class LogFollower:
    """New entries of some logs (``ListLogEntries`` requests), each log from its own count."""

    def __init__(self, api: Api, logs: list[dict[str, Any]], seen: list[int]) -> None:
        self.api, self.logs = api, logs
        self.seen = (seen + [0] * len(logs))[: len(logs)]

    @property
    def cursor(self) -> str:
        return ",".join(str(n) for n in self.seen)

    async def new_entries(self) -> list[str]:
        found: list[str] = []
        for i, log in enumerate(self.logs):
            while True:
                page, skip = divmod(self.seen[i], LOG_PAGE)
                response = await self.api.call(
                    "ListLogEntries", **log, page=page + 1, per_page=LOG_PAGE
                )
                entries = [e.message for e in response.log_entries][skip:]
                found.extend(entries)
                self.seen[i] += len(entries)
                if len(response.log_entries) < LOG_PAGE or not entries:
                    break
        return found


def _seen(request: Request) -> list[int]:
    text = request.headers.get("last-event-id", "")
    return [int(p) for p in text.split(",") if p.isdigit()]


def _event(cursor: str, lines: list[str]) -> str:
    return f"id: {cursor}\ndata: {json.dumps(lines)}\n\n"


class Streams:
    def __init__(self, dashboard: Dashboard) -> None:
        self.dashboard = dashboard

    def follow(self, request: Request, api: Api, logs: list[dict[str, Any]]) -> Response:
        """Server-sent events: every new line of ``logs``, polled every second."""
        follower = LogFollower(api, logs, _seen(request))
        return StreamingResponse(
            self._events(request, api, follower),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def _events(
        self, request: Request, api: Api, follower: LogFollower
    ) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        ends = loop.time() + STREAM_SECONDS
        yield "retry: 2000\n\n"
        while self.dashboard.serving and loop.time() < ends:
            if self.dashboard.sessions.get(api.session.id) is None:
                return
            try:
                lines = await follower.new_entries()
            except ApiError as exc:
                yield f"event: problem\ndata: {json.dumps(exc.status.description)}\n\n"
                return
            if lines:
                yield _event(follower.cursor, lines)
            if await request.is_disconnected():
                return
            await asyncio.sleep(POLL_SECONDS)

    async def deployment_logs(self, request: Request, api: Api) -> Response:
        found = await api.call("GetDeployment", deployment_id=request.path_params["deployment"])
        dep = found.deployment
        model = dep.worker.model
        logs = [
            {
                "user_app_id": {"user_id": api.user_id, "app_id": model.app_id},
                "model_id": model.id,
                "model_version_id": model.model_version.id,
                "log_type": "runner",
                "compute_cluster_id": pool.compute_cluster.id,
                "nodepool_id": pool.id,
            }
            for pool in dep.nodepools
        ]
        return self.follow(request, api, logs)

    async def build_log(self, request: Request, api: Api) -> Response:
        params = request.path_params
        log = {
            "user_app_id": {"user_id": api.user_id, "app_id": params["app"]},
            "model_id": params["model"],
            "model_version_id": params["version"],
            "log_type": "builder",
        }
        return self.follow(request, api, [log])


def choose_method(version: resources_pb2.ModelVersion, wanted: str) -> tuple[str, bool]:
    """The method a text goes to, and whether it streams its answer: ``wanted`` when the
    version has it; else its first method that streams, else its first unary one."""
    signatures = [s for s in version.method_signatures if s.method_type in (STREAMING, UNARY)]
    for s in signatures:
        if s.name == wanted:
            return s.name, s.method_type == STREAMING
    for s in signatures:
        if s.method_type == STREAMING:
            return s.name, True
    if signatures:
        return signatures[0].name, False
    return "", False


def output_text(output: resources_pb2.Output) -> str:
    """What an output says, as text: its text, else its first part's, else its data as JSON."""
    if output.data.HasField("text"):
        return str(output.data.text.raw)
    for part in output.data.parts:
        if part.data.HasField("text"):
            return str(part.data.text.raw)
    data = json_format.MessageToDict(output.data, preserving_proto_field_name=True)
    return json.dumps(data) if data else ""


def _line(**fields: Any) -> str:
    return json.dumps(fields) + "\n"


async def _prediction(api: Api, name: str, request: Any) -> AsyncIterator[str]:
    async for response in api.responses(name, request, TRY_SECONDS):
        if response.status.code != status_code_pb2.SUCCESS:
            yield _line(error=response.status.description or "the prediction failed")
            return
        for output in response.outputs:
            if output.status.code not in (0, status_code_pb2.SUCCESS):
                yield _line(error=output.status.description or "the model failed")
                return
            yield _line(text=output_text(output))
    yield _line(done=True)


async def try_it(request: Request, api: Api) -> Response:
    """Send the box's text to the deployment; its outputs come back as they arrive."""
    body = await json_body(request)
    text = body.get("text")
    if not isinstance(text, str) or not text:
        raise Refused(400, "write a text to send")
    found = await api.call("GetDeployment", deployment_id=request.path_params["deployment"])
    dep = found.deployment
    model = dep.worker.model
    version = await api.call(
        "GetModelVersion",
        user_app_id={"user_id": api.user_id, "app_id": model.app_id},
        model_id=model.id,
        version_id=model.model_version.id,
    )
    method, streams = choose_method(version.model_version, str(body.get("method") or ""))
    message = service_pb2.PostModelOutputsRequest(
        user_app_id=resources_pb2.UserAppIDSet(user_id=api.user_id, app_id=model.app_id),
        model_id=model.id,
        version_id=model.model_version.id,
        runner_selector=resources_pb2.RunnerSelector(
            deployment=resources_pb2.Deployment(id=dep.id, user_id=api.user_id)
        ),
    )
    item = message.inputs.add()
    item.data.text.raw = text
    if method:
        item.data.metadata[METHOD_KEY] = method
    name = "GenerateModelOutputs" if streams else "PostModelOutputs"
    return StreamingResponse(
        _prediction(api, name, message),
        media_type="application/x-ndjson",
        headers={"Cache-Control": "no-store", "X-Method": method or "predict"},
    )
