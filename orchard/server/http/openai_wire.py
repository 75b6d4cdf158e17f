"""The OpenAI-compatible API's conversions, pure: a request body to a V2 prediction, a V2
answer back to OpenAI JSON, and every failure to OpenAI's error shape and HTTP status.

On the wire to the model an OpenAI call is an ordinary prediction (api-notes 11): the method
``openai_transport`` (unary: ``PostModelOutputs``) or ``openai_stream_transport`` (streaming:
``GenerateModelOutputs``) named in ``inputs[0].data.metadata["_method_name"]``, its argument
``msg`` in the part of that id (the request JSON with ``openai_endpoint`` added), each answer
a JSON string in the output's part ``return``. A model answers a failure with a JSON object
``{"code", "description", "details"}`` (the official ``OpenAIModelClass`` does so, and
Orchard's, which may add ``http_status`` and ``param``); it becomes an OpenAI error here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2, status_pb2

from orchard.ids import ModelRef, model_ref

SC = status_code_pb2.StatusCode
UNARY_METHOD = "openai_transport"
STREAM_METHOD = "openai_stream_transport"
ARGUMENT = "msg"
RETURN = "return"
RETRY_AFTER_BUSY = 1  # seconds: a full queue drains fast
RETRY_AFTER_DEPLOYING = 5  # seconds: a replica is starting
MODEL_FORMS = (
    "http(s)://HOST/<user>/<app>/models/<model>[/versions/<id>] or "
    "<user>/<app>/models/<model>[/versions/<id>]"
)


@dataclass
class OpenAIError(Exception):
    """A failure as OpenAI reports it: HTTP ``status`` and ``{"error": {...}}``."""

    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None
    retry_after: int | None = None  # seconds, sent as Retry-After

    def body(self) -> dict[str, Any]:
        error = {"message": self.message, "type": self.type, "param": self.param}
        return {"error": error | {"code": self.code}}

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}


def bad_request(message: str, param: str | None) -> OpenAIError:
    return OpenAIError(400, message, param=param, code="invalid_request")


def parse_model(value: object) -> ModelRef:
    """``model`` as the hosted endpoint takes it (:data:`MODEL_FORMS`)."""
    if not isinstance(value, str) or not value:
        raise bad_request(f"'model' is required: a model's URL, {MODEL_FORMS}", "model")
    found = model_ref(value)
    if found is None:
        raise bad_request(f"'model' {value!r} names no model; write it as {MODEL_FORMS}", "model")
    return found


def model_url(base: str, user_id: str, app_id: str, model_id: str) -> str:
    return f"{base.rstrip('/')}/{user_id}/{app_id}/models/{model_id}"


def parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError:
        raise bad_request("the request body is not JSON; send a JSON object", None) from None
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object", None)
    return body


def require(body: dict[str, Any], field: str, kind: type | tuple[type, ...], what: str) -> None:
    """``body[field]`` is present and of ``kind``; else a 400 naming the field."""
    if field not in body:
        raise bad_request(f"'{field}' is required: {what}", field)
    if not isinstance(body[field], kind) or isinstance(body[field], bool):
        raise bad_request(f"'{field}' must be {what}", field)


def prediction(
    body: dict[str, Any], endpoint: str, stream: bool
) -> service_pb2.PostModelOutputsRequest:
    """The V2 request that carries ``body`` to its model (``model`` and ``deployment_id`` are
    read from it; ``deployment_id`` does not travel on)."""
    name = parse_model(body.get("model"))
    deployment_id = body.pop("deployment_id", None)
    if deployment_id is not None and (not isinstance(deployment_id, str) or not deployment_id):
        raise bad_request("'deployment_id' must be a deployment's id (a string)", "deployment_id")
    msg = json.dumps(body | {"openai_endpoint": endpoint}, separators=(",", ":"))
    data = resources_pb2.Data()
    data.metadata["_method_name"] = STREAM_METHOD if stream else UNARY_METHOD
    data.parts.add(id=ARGUMENT).data.string_value = msg
    request = service_pb2.PostModelOutputsRequest(
        user_app_id=resources_pb2.UserAppIDSet(user_id=name.user_id, app_id=name.app_id),
        model_id=name.model_id,
        version_id=name.version_id,
        inputs=[resources_pb2.Input(data=data)],
    )
    if deployment_id:
        request.runner_selector.deployment.id = deployment_id
        request.runner_selector.deployment.user_id = name.user_id
    return request


def answers(response: service_pb2.MultiOutputResponse) -> list[str]:
    """The JSON strings one V2 response carries (one per output); raises the OpenAI error a
    failed status, a failed output or a model's error JSON stands for."""
    if response.status.code not in (SC.SUCCESS, SC.MIXED_STATUS):
        raise from_status(response.status)
    found = []
    for output in response.outputs:
        if output.status.code not in (SC.SUCCESS, 0):
            raise from_status(output.status)
        text = next((p.data.string_value for p in output.data.parts if p.id == RETURN), None)
        if text is None:
            raise OpenAIError(
                502,
                "the model answered without a 'return' part; is it an OpenAIModelClass?",
                type="server_error",
                code="bad_model_answer",
            )
        check_answer(text)
        found.append(text)
    return found


def check_answer(text: str) -> None:
    """Raise the OpenAI error a model's error JSON stands for; a normal answer passes."""
    if '"code"' not in text or '"description"' not in text:
        return
    try:
        answer = json.loads(text)
    except ValueError:
        return
    if isinstance(answer, dict) and "description" in answer and "object" not in answer:
        raise from_model_error(answer)


_ERROR_CODE = re.compile(r"Error code: (\d{3})")


def from_model_error(answer: dict[str, Any]) -> OpenAIError:
    """A model's ``{"code", "description", "details"}`` as an OpenAI error: its
    ``http_status``, else the status a backend's error text names ("Error code: 400 - ..."),
    else 500."""
    details = str(answer.get("details") or "")
    message = ": ".join(p for p in (str(answer.get("description") or ""), details) if p)
    status = answer.get("http_status")
    if not isinstance(status, int) or not 400 <= status <= 599:
        found = _ERROR_CODE.search(details)
        status = int(found[1]) if found else 500
    kind = "invalid_request_error" if status < 500 else "server_error"
    param = answer.get("param") if isinstance(answer.get("param"), str) else None
    message = message or "the model failed"
    return OpenAIError(status, message, type=kind, param=param, code="model_error")


# V2 status codes → (HTTP status, OpenAI type, OpenAI code, Retry-After)
_NOT_FOUND = (404, "invalid_request_error", "model_not_found", None)
_BY_CODE: dict[int, tuple[int, str, str, int | None]] = {
    SC.CONN_KEY_INVALID: (401, "invalid_request_error", "invalid_api_key", None),
    SC.CONN_KEY_NOT_FOUND: (401, "invalid_request_error", "invalid_api_key", None),
    SC.CONN_INSUFFICIENT_SCOPES: (403, "permission_error", "insufficient_scopes", None),
    SC.CONN_DOES_NOT_EXIST: _NOT_FOUND,
    SC.MODEL_DOES_NOT_EXIST: _NOT_FOUND,
    SC.MODEL_NOT_DEPLOYED: (404, "invalid_request_error", "model_not_deployed", None),
    SC.DEPLOYMENT_DOES_NOT_EXIST: (404, "invalid_request_error", "deployment_not_found", None),
    SC.DEPLOYMENT_DISABLED: (403, "permission_error", "deployment_disabled", None),
    SC.MODEL_BUSY_PLEASE_RETRY: (429, "rate_limit_error", "model_busy", RETRY_AFTER_BUSY),
    SC.MODEL_DEPLOYING: (503, "server_error", "model_deploying", RETRY_AFTER_DEPLOYING),
    SC.MODEL_LOADING: (503, "server_error", "model_loading", RETRY_AFTER_DEPLOYING),
    SC.CONN_INVALID_REQUEST: (400, "invalid_request_error", "invalid_request", None),
    SC.DEPLOYMENT_INVALID_ARGUMENT: (400, "invalid_request_error", "invalid_request", None),
    SC.INPUT_OVER_LIMIT: (400, "invalid_request_error", "input_too_large", None),
    SC.RPC_MAX_MESSAGE_SIZE_EXCEEDED: (413, "invalid_request_error", "request_too_large", None),
    SC.RUNNER_PROCESSING_FAILED: (502, "server_error", "replica_failed", None),
    SC.NOT_IMPLEMENTED: (501, "server_error", "not_implemented", None),
}


def from_status(status: status_pb2.Status) -> OpenAIError:
    """The OpenAI error a V2 status stands for; a failure this table does not name is a
    model's or the server's (500)."""
    http, kind, code, retry = _BY_CODE.get(status.code, (500, "server_error", "", None))
    message = status.description or "the request failed"
    if status.details and status.details not in message:
        message = f"{message} ({status.details})"
    return OpenAIError(http, message, type=kind, code=code or None, retry_after=retry)
