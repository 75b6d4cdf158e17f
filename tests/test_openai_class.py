"""Orchard's OpenAIModelClass (orchard/runners/models/openai_class.py) in-process, and the
endpoint's pure conversions (orchard/server/http/openai_wire.py): forwarding to a backend on
loopback (what it receives, what comes back), answering in Python, errors as JSON with their
HTTP status, and the error table from V2 statuses and model answers to OpenAI errors."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2 as sc
from clarifai_grpc.grpc.api.status import status_pb2
from openai import OpenAI

from orchard.authoring import OpenAIModelClass, OpenAIRequestError, chat_answer
from orchard.ids import ModelRef
from orchard.runners.models import request_adapter
from orchard.server.http import openai_wire as wire


class Backend(BaseHTTPRequestHandler):
    """An OpenAI-compatible backend: records each body; chat answers a word per chunk."""

    seen: list[dict] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append({"path": self.path, **body})
        if body.get("messages") == []:
            self._send(400, b'{"error": {"message": "messages is empty"}}', "application/json")
        elif body.get("stream"):
            chunks = [{"choices": [{"index": 0, "delta": {"content": w}}]} for w in ("a", "b")]
            chunks.append({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
            events = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
            self._send(200, events + b"data: [DONE]\n\n", "text/event-stream")
        else:
            answer = {
                "object": "chat.completion",
                "usage": {"prompt_tokens": 3, "completion_tokens": 1},
            }
            self._send(200, json.dumps(answer).encode(), "application/json")

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def backend() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


class Forwarding(OpenAIModelClass):
    pass


@pytest.fixture
def forwarding(backend: str) -> Iterator[Forwarding]:
    model = Forwarding()
    model.client = OpenAI(base_url=backend, api_key="unused", max_retries=0)
    model.model = "served-name"
    Backend.seen.clear()
    yield model
    model.client.close()


def msg(**fields: object) -> str:
    return json.dumps(
        {"model": "u/a/models/m", "messages": [{"role": "user", "content": "hi"}]} | fields
    )


def call(model: OpenAIModelClass, method: str, text: str) -> list[resources_pb2.Output]:
    data = resources_pb2.Data()
    data.metadata["_method_name"] = method
    data.parts.add(id="msg").data.string_value = text
    request = service_pb2.PostModelOutputsRequest(inputs=[resources_pb2.Input(data=data)])
    if method == "openai_transport":
        return list(request_adapter.predict(model, request).outputs)
    return [r.outputs[0] for r in request_adapter.generate(model, request)]


def test_forwarding_normalises_the_request_and_counts_tokens(forwarding):
    (output,) = call(forwarding, "openai_transport", msg(max_tokens=7, extra_field=1))
    assert json.loads(output.data.parts[0].data.string_value)["object"] == "chat.completion"
    assert (output.prompt_tokens, output.completion_tokens) == (3, 1)
    (seen,) = Backend.seen
    assert seen["path"] == "/v1/chat/completions" and seen["model"] == "served-name"
    assert seen["max_tokens"] == seen["max_completion_tokens"] == 7
    assert seen["extra_field"] == 1 and seen["stream"] is False


def test_forwarding_a_stream_forces_usage(forwarding):
    outputs = call(forwarding, "openai_stream_transport", msg(stream=True))
    chunks = [json.loads(o.data.parts[0].data.string_value) for o in outputs]
    assert [c["choices"][0]["delta"]["content"] for c in chunks[:2]] == ["a", "b"]
    assert outputs[-1].prompt_tokens == 3 and outputs[-1].completion_tokens == 2
    assert Backend.seen[0]["stream_options"] == {"include_usage": True}


def test_a_backend_error_keeps_its_status(forwarding):
    answer = json.loads(forwarding.openai_transport(msg(messages=[])))
    assert answer["http_status"] == 400 and "messages is empty" in answer["details"]
    error = wire.from_model_error(answer)
    assert error.status == 400 and error.type == "invalid_request_error"


class Plain(OpenAIModelClass):
    def chat_completion(self, request: dict) -> dict:
        if request["messages"][-1]["content"] == "bad":
            raise OpenAIRequestError("no bad words", "messages")
        return chat_answer(request, "hello", 1, 1)


def test_a_plain_model_serves_chat_and_streams_it_as_one_chunk():
    model = Plain()
    assert json.loads(model.openai_transport(msg()))["choices"][0]["message"]["content"] == "hello"
    (chunk,) = [json.loads(c) for c in model.openai_stream_transport(msg(stream=True))]
    assert chunk["object"] == "chat.completion.chunk"
    assert chunk["choices"][0]["delta"]["content"] == "hello"
    bad = json.loads(model.openai_transport(msg(messages=[{"role": "user", "content": "bad"}])))
    assert (bad["http_status"], bad["param"]) == (400, "messages")
    missing = json.loads(
        model.openai_transport(json.dumps({"input": "x", "openai_endpoint": "/embeddings"}))
    )
    assert missing["http_status"] == 404 and "does not serve /embeddings" in missing["details"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("alice/app/models/m", ModelRef("alice", "app", "m")),
        (
            "https://host.example/alice/app/models/m/versions/v1",
            ModelRef("alice", "app", "m", "v1"),
        ),
        ("http://127.0.0.1:8001/alice/app/models/m/", ModelRef("alice", "app", "m")),
    ],
)
def test_model_names(value, expected):
    assert wire.parse_model(value) == expected


@pytest.mark.parametrize("value", [None, "", "m", "alice/m", "alice/app/m", 3])
def test_a_model_name_that_names_no_model_is_a_400_naming_model(value):
    with pytest.raises(wire.OpenAIError) as error:
        wire.parse_model(value)
    assert (error.value.status, error.value.param) == (400, "model")


def test_the_prediction_carries_the_request_and_the_deployment():
    body = {"model": "alice/app/models/m/versions/v1", "deployment_id": "d1", "messages": []}
    request = wire.prediction(body, "/chat/completions", stream=True)
    assert (request.user_app_id.user_id, request.user_app_id.app_id) == ("alice", "app")
    assert (request.model_id, request.version_id) == ("m", "v1")
    assert request.runner_selector.deployment.id == "d1"
    data = request.inputs[0].data
    assert data.metadata["_method_name"] == "openai_stream_transport"
    sent = json.loads(data.parts[0].data.string_value)
    assert sent["openai_endpoint"] == "/chat/completions" and "deployment_id" not in sent


@pytest.mark.parametrize(
    ("code", "status", "retry_after"),
    [
        (sc.CONN_KEY_INVALID, 401, None),
        (sc.MODEL_DOES_NOT_EXIST, 404, None),
        (sc.MODEL_NOT_DEPLOYED, 404, None),
        (sc.CONN_INVALID_REQUEST, 400, None),
        (sc.MODEL_BUSY_PLEASE_RETRY, 429, 1),
        (sc.MODEL_DEPLOYING, 503, 5),
        (sc.INTERNAL_UNCATEGORIZED, 500, None),
        (sc.FAILURE, 500, None),
    ],
)
def test_v2_statuses_become_openai_errors(code, status, retry_after):
    error = wire.from_status(status_pb2.Status(code=code, description="why"))
    assert (error.status, error.retry_after) == (status, retry_after)
    assert error.body()["error"]["message"] == "why"
    assert set(error.body()["error"]) == {"message", "type", "param", "code"}


def test_a_model_error_answer_fails_the_call():
    response = service_pb2.MultiOutputResponse(status=status_pb2.Status(code=sc.SUCCESS))
    part = response.outputs.add(status=status_pb2.Status(code=sc.SUCCESS)).data.parts.add(
        id="return"
    )
    part.data.string_value = json.dumps(
        {
            "code": 21313,
            "description": "Model prediction failed",
            "details": "Error code: 422 - bad",
        }
    )
    with pytest.raises(wire.OpenAIError) as error:
        wire.answers(response)
    assert error.value.status == 422 and "bad" in error.value.message


def test_responses_and_embeddings_forward_to_their_paths(forwarding):
    for endpoint, fields in (("/responses", {"input": "hi"}), ("/embeddings", {"input": ["a"]})):
        text = json.dumps({"model": "u/a/models/m", "openai_endpoint": endpoint, **fields})
        assert "usage" in json.loads(forwarding.openai_transport(text))
    assert [s["path"] for s in Backend.seen] == ["/v1/responses", "/v1/embeddings"]
    assert all(s["model"] == "served-name" and "openai_endpoint" not in s for s in Backend.seen)
