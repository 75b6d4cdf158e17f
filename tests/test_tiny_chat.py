"""The tiny-chat example (examples/models/tiny-chat): its numpy transformer, in-process, its
OpenAIModelClass methods through the request adapter as a runner calls them. The model in a
replica, through the server's OpenAI-compatible endpoint: tests/test_http_openai.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2

from orchard.packaging.inspect import load_model_class
from orchard.runners.models import request_adapter

PACKAGE = Path(__file__).resolve().parents[1] / "examples" / "models" / "tiny-chat"
SC = status_code_pb2.StatusCode


@pytest.fixture(scope="module")
def model():
    cls = load_model_class(PACKAGE, stub_missing=False)
    instance = cls()
    instance.load_model()
    return instance


@pytest.fixture(scope="module")
def tiny_lm(model):
    return sys.modules[type(model.lm).__module__]


def test_kv_cache_generation_equals_full_recompute(model, tiny_lm):
    lm = model.lm
    prompt = tiny_lm.encode("User: Hello!\nAssistant:")
    cached = list(lm.generate(prompt, 24))
    tokens, recomputed = list(prompt), []
    for _ in range(24):
        logits = lm.logits(lm.forward(tokens))[-1].copy()
        logits[tiny_lm.BOS] = -np.inf
        token = int(np.argmax(logits))
        if token == tiny_lm.EOS:
            break
        recomputed.append(token)
        tokens.append(token)
    assert cached == recomputed and len(cached) > 0
    # the cached features of each step are the full pass's, not only the argmax
    cache = tiny_lm.Cache()
    lm.forward(tokens[:-3], cache)
    stepped = np.concatenate([lm.forward([t], cache) for t in tokens[-3:]])
    np.testing.assert_allclose(stepped, lm.forward(tokens)[-3:], rtol=1e-4, atol=1e-4)


def test_the_weights_and_answers_are_deterministic(model, tiny_lm):
    again = tiny_lm.TinyLM()
    prompt = tiny_lm.encode("User: What is a nodepool?\nAssistant:")
    assert list(again.generate(prompt, 30)) == list(model.lm.generate(prompt, 30))


def chat(**fields):
    return {
        "model": "u/examples/models/tiny-chat",
        "messages": [{"role": "user", "content": "Hello!"}],
    } | fields


def call(model, method, msg):
    """One V2 request to ``method`` through the request adapter (what a runner does)."""
    data = resources_pb2.Data()
    data.metadata["_method_name"] = method
    data.parts.add(id="msg").data.string_value = json.dumps(msg)
    request = service_pb2.PostModelOutputsRequest(inputs=[resources_pb2.Input(data=data)])
    if method == "openai_transport":
        responses = [request_adapter.predict(model, request)]
    else:
        responses = list(request_adapter.generate(model, request))
    for response in responses:
        assert response.status.code == SC.SUCCESS, response.status
    return [r.outputs[0] for r in responses]


def test_chat_answers_with_real_token_counts(model):
    (output,) = call(model, "openai_transport", chat())
    answer = json.loads(output.data.parts[0].data.string_value)
    text = answer["choices"][0]["message"]["content"]
    assert answer["object"] == "chat.completion" and text
    prompt = "User: Hello!\nAssistant:"
    assert answer["usage"]["prompt_tokens"] == len(prompt.encode()) + 1  # and the start token
    assert answer["usage"]["completion_tokens"] >= len(text.encode())
    assert (output.prompt_tokens, output.completion_tokens) == (
        answer["usage"]["prompt_tokens"],
        answer["usage"]["completion_tokens"],
    )


def test_streaming_yields_token_by_token(model):
    outputs = call(model, "openai_stream_transport", chat(stream=True))
    chunks = [json.loads(o.data.parts[0].data.string_value) for o in outputs]
    pieces = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    text = "".join(p for p in pieces if p)
    assert all(len(p.encode()) == 1 for p in pieces[1:-1])  # one byte token per chunk
    (unary,) = call(model, "openai_transport", chat())
    whole = json.loads(unary.data.parts[0].data.string_value)
    assert text == whole["choices"][0]["message"]["content"]
    assert chunks[-1]["usage"] == whole["usage"]  # include_usage is forced on streams
    assert chunks[-2]["choices"][0]["finish_reason"] in ("stop", "length")


def test_completions_and_embeddings(model):
    prompt = "User: Tell me about dogs.\nAssistant:"
    (output,) = call(
        model,
        "openai_transport",
        {"prompt": prompt, "max_tokens": 8, "openai_endpoint": "/completions"},
    )
    answer = json.loads(output.data.parts[0].data.string_value)
    assert (
        answer["usage"]["completion_tokens"] == 8
        and answer["choices"][0]["finish_reason"] == "length"
    )
    (output,) = call(
        model, "openai_transport", {"input": ["cats", "dogs"], "openai_endpoint": "/embeddings"}
    )
    vectors = [d["embedding"] for d in json.loads(output.data.parts[0].data.string_value)["data"]]
    assert len(vectors) == 2 and len(vectors[0]) == model.lm.config.dim
    assert abs(np.linalg.norm(vectors[0]) - 1) < 1e-4


def test_bad_requests_are_answered_naming_the_field(model):
    (output,) = call(model, "openai_transport", {"messages": "hi"})
    error = json.loads(output.data.parts[0].data.string_value)
    assert error["http_status"] == 400 and error["param"] == "messages"
    (output,) = call(model, "openai_transport", chat(max_tokens=100_000))
    assert json.loads(output.data.parts[0].data.string_value)["param"] == "max_tokens"
