"""The OpenAI-compatible endpoint (/v2/ext/openai/v1) against a live server, called with the
official ``openai`` client: tiny-chat (examples/models/tiny-chat) for chat, completions and
embeddings, a model that streams until its client goes away (the cancel), a deployment with no
replica (the full queue and the cold-start hold), and a model written with the official SDK's
OpenAIModelClass, uploaded with the official uploader.

Marked e2e: the models run in real replica processes in their built environments. One server
and one set of deployments (tests/openai_stack.py) serve the module.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from clarifai_grpc.grpc.api import resources_pb2 as r

from tests.conftest import CLARIFAI, official_upload
from tests.openai_stack import Stack, running_stack
from tests.resources import ok
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("openai")) as running:
        yield running


def test_tiny_chat_streams_a_chunk_per_token_the_text_it_answers_whole(stack):
    question = [{"role": "user", "content": "What is Python?"}]
    client, model = stack.client(), stack.model("tiny-chat")
    stream = client.chat.completions.create(
        model=model, messages=question, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert pieces and all(len(p) == 1 for p in pieces)
    assert chunks[-1].usage.completion_tokens >= len(pieces)
    whole = client.chat.completions.create(model=model, messages=question)
    assert "".join(pieces) == whole.choices[0].message.content


def test_chat_completion(stack):
    answer = stack.client().chat.completions.create(
        model=stack.model("tiny-chat"),
        messages=[{"role": "user", "content": "Hello!"}],
        max_tokens=40,
    )
    assert answer.object == "chat.completion"
    assert answer.choices[0].message.content
    prompt_tokens = len(b"User: Hello!\nAssistant:") + 1  # bytes and the start token
    assert answer.usage is not None and answer.usage.prompt_tokens == prompt_tokens
    assert answer.usage.completion_tokens >= len(answer.choices[0].message.content)


def test_chat_streams_token_by_token_with_usage(stack):
    client = stack.client()
    request = {
        "model": f"http://127.0.0.1/{stack.model('tiny-chat')}",  # the URL form
        "messages": [{"role": "user", "content": "Tell me about cats."}],
        "max_tokens": 60,
    }
    chunks = list(client.chat.completions.create(**request, stream=True))
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) > 5 and all(len(p) == 1 for p in pieces)
    whole = client.chat.completions.create(**request)
    assert "".join(pieces) == whole.choices[0].message.content
    assert chunks[-1].usage == whole.usage  # the usage chunk passes through


def test_completions_and_embeddings(stack):
    client = stack.client()
    completion = client.completions.create(
        model=stack.model("tiny-chat"), prompt="User: Hi there\nAssistant:", max_tokens=12
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 12
    streamed = client.completions.create(
        model=stack.model("tiny-chat"),
        prompt="User: Hi there\nAssistant:",
        max_tokens=12,
        stream=True,
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == completion.choices[0].text
    embedded = client.embeddings.create(model=stack.model("tiny-chat"), input=["cats", "dogs"])
    assert [e.index for e in embedded.data] == [0, 1] and len(embedded.data[0].embedding) == 256


def test_models_lists_the_deployed_models_and_deployment_id_picks_one(stack):
    models = {m.id: m for m in stack.client().models.list()}
    assert f"http://127.0.0.1:{stack.server.server.http_port}/{stack.model('tiny-chat')}" in models
    tiny = next(m for m in models.values() if m.id.endswith("/tiny-chat"))
    assert sorted(tiny.model_extra["deployments"]) == ["tiny-dep", "tiny-idle"]
    answer = stack.client().chat.completions.create(
        model=tiny.id,
        messages=[{"role": "user", "content": "Hello!"}],
        extra_body={"deployment_id": "tiny-dep"},
    )
    assert answer.choices[0].message.content


def test_errors_are_openai_errors(stack):
    client = stack.client(max_retries=0)
    chat = {"messages": [{"role": "user", "content": "Hello!"}]}
    with pytest.raises(openai.AuthenticationError):
        stack.client("not-a-key").chat.completions.create(model=stack.model("tiny-chat"), **chat)
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model=stack.model("no-such-model"), **chat)
    assert missing.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=stack.model("tiny-chat"), messages=[])
    assert bad.value.body["param"] == "messages"
    with pytest.raises(openai.BadRequestError) as bad:  # the model's own error
        client.chat.completions.create(model=stack.model("tiny-chat"), max_tokens=9999, **chat)
    assert bad.value.body["param"] == "max_tokens"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="tiny-chat", **chat)
    assert bad.value.body["param"] == "model"


def test_a_full_queue_is_429_and_the_cold_start_hold_503(stack):
    dispatcher = stack.server.server.dispatcher
    client = stack.client(max_retries=0)
    chat = {
        "model": stack.model("tiny-chat"),
        "messages": [{"role": "user", "content": "Hello!"}],
        "extra_body": {"deployment_id": "tiny-idle"},  # no replica: every call waits
    }
    saved = dispatcher.settings.max_queue, dispatcher.settings.hold_seconds
    try:
        dispatcher.settings.max_queue = 0
        with pytest.raises(openai.RateLimitError) as busy:
            client.chat.completions.create(**chat)
        assert busy.value.response.headers["Retry-After"] == "1"
        assert "queue full" in busy.value.message
        dispatcher.settings.max_queue, dispatcher.settings.hold_seconds = saved[0], 0.0
        with pytest.raises(openai.InternalServerError) as deploying:
            client.chat.completions.create(**chat, stream=True)
        assert deploying.value.status_code == 503
        assert deploying.value.response.headers["Retry-After"] == "5"
    finally:
        dispatcher.settings.max_queue, dispatcher.settings.hold_seconds = saved


def test_a_client_that_goes_away_cancels_the_item(stack):
    dribble = next(r for r in stack.replicas if r.replica_id == "dribble")
    stream = stack.client().chat.completions.create(
        model=stack.model("dribble"), messages=[{"role": "user", "content": "go"}], stream=True
    )
    first = next(iter(stream))
    assert first.choices[0].delta.content == "0 "
    stream.close()
    wait_for(
        lambda: "generate openai_stream_transport cancelled" in dribble.output(),
        timeout=60,
        what="the replica to log the cancelled item",
    )


def test_a_unary_call_whose_client_goes_away_is_cancelled(stack):
    dribble = next(r for r in stack.replicas if r.replica_id == "dribble")
    gate = stack.tmp / "unary-gate"
    body = {"model": stack.model("dribble"), "messages": [{"role": "user", "content": str(gate)}]}
    connection = http.client.HTTPConnection("127.0.0.1", stack.server.server.http_port, timeout=60)
    headers = {"Authorization": f"Bearer {stack.server.pat}", "Content-Type": "application/json"}
    connection.request("POST", "/v2/ext/openai/v1/chat/completions", json.dumps(body), headers)
    wait_for(
        lambda: "unary chat started" in dribble.output(),
        timeout=60,
        what="the model to start the call",
    )
    connection.close()
    try:
        wait_for(
            lambda: "predict openai_transport cancelled" in dribble.output(),
            timeout=60,
            what="the replica to log the cancelled item",
        )
    finally:
        gate.write_text("")  # the model's thread returns


def test_raw_sse_and_error_shape(stack):
    body = {
        "model": stack.model("tiny-chat"),
        "messages": [{"role": "user", "content": "Hi there"}],
        "stream": True,
        "max_tokens": 5,
    }
    text = _post(stack, "/chat/completions", body, stack.server.pat)[1]
    events = [e for e in text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    assert json.loads(events[-2][6:])["usage"]["completion_tokens"] == 5
    status, text = _post(
        stack, "/embeddings", {"model": stack.model("tiny-chat")}, stack.server.pat
    )
    assert status == 400
    assert json.loads(text) == {
        "error": {
            "message": "'input' is required: a string or a list of strings or token ids",
            "type": "invalid_request_error",
            "param": "input",
            "code": "invalid_request",
        }
    }
    assert _post(stack, "/embeddings", {"model": stack.model("tiny-chat")}, None)[0] == 401


def _post(stack: Stack, path: str, body: dict, pat: str | None) -> tuple[int, str]:
    headers = {"Content-Type": "application/json"}
    if pat is not None:
        headers["Authorization"] = f"Bearer {pat}"
    request = urllib.request.Request(
        stack.base_url + path, data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_a_model_written_with_the_official_openai_class(official_python, stack):
    """clarifai 12.5.0's OpenAIModelClass, uploaded with its uploader, forwarding to the
    backend it starts, called through Orchard's OpenAI endpoint."""
    package = stack.tmp / "official-openai"
    shutil.copytree(HERE / "official_sdk" / "openai_backend", package)
    _official_upload(official_python, stack, package)
    uid = r.UserAppIDSet(user_id=stack.server.user_id, app_id="examples")
    versions = stack.api.call("ListModelVersions", user_app_id=uid, model_id="official-openai")
    stack.serve("official-openai", ok(versions).model_versions[0].id, "official-dep")
    client = stack.client()
    chat = {
        "model": stack.model("official-openai"),
        "messages": [{"role": "user", "content": "a b c"}],
    }
    answer = client.chat.completions.create(**chat)
    assert answer.choices[0].message.content == "echo: a b c"
    assert answer.usage is not None and answer.usage.completion_tokens == 4
    chunks = list(client.chat.completions.create(**chat, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: a b c" and chunks[-1].usage.prompt_tokens == 3


def _official_upload(official_python: Path, stack: Stack, package: Path) -> None:
    official_upload(official_python, stack.server, package, stack.tmp)
    assert CLARIFAI in (package / "requirements.txt").read_text()


def test_a_body_over_the_request_limit_is_413(stack):
    fetcher = stack.server.server.fetcher
    saved = fetcher.policy
    fetcher.policy = dataclasses.replace(saved, max_request_bytes=1000)
    try:
        body = {"model": stack.model("tiny-chat"), "input": "x" * 2000}
        status, text = _post(stack, "/embeddings", body, stack.server.pat)
    finally:
        fetcher.policy = saved
    assert status == 413 and json.loads(text)["error"]["code"] == "request_too_large"
