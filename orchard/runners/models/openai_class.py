"""``OpenAIModelClass``: a model that the OpenAI-compatible endpoint calls.

The endpoint (``/v2/ext/openai/v1`` on the server's HTTP port) calls two methods, with the
OpenAI request JSON plus a field ``openai_endpoint`` (``/chat/completions``,
``/completions``, ``/embeddings``, ``/responses``):

- ``openai_transport(msg: str) -> str``: one answer, as JSON;
- ``openai_stream_transport(msg: str) -> Iterator[str]``: the chunks of a stream, as JSON.

A subclass serves them in one of two ways.

**Forward to an OpenAI-compatible server** the model starts (vLLM, SGLang, llama.cpp's
server...): set ``client`` (an ``openai.OpenAI`` pointed at it) and ``model`` (the name it
serves) in ``load_model``. Requests go on as they came (fields the client does not know too),
with ``model`` replaced, ``max_tokens`` and ``max_completion_tokens`` made the same, and
``stream_options.include_usage`` forced on a stream so that token counts come back::

    class Served(OpenAIModelClass):
        def load_model(self) -> None:
            self.backend = start_my_server()                # your process, on loopback
            from openai import OpenAI
            self.client = OpenAI(base_url=self.backend.url, api_key="none")
            self.model = "my-model"

**Answer in Python**: override the hooks of the endpoints the model serves, each taking the
request as a dict and returning OpenAI's JSON as a dict (or an iterator of chunk dicts):
``chat_completion``, ``chat_completion_stream``, ``completion``, ``completion_stream``,
``embeddings``, ``responses``, ``responses_stream``. :func:`chat_answer` and
:func:`chat_chunk` build the common shapes. A model without a hook or a client for an
endpoint answers it 404 (not served); a ``chat_completion`` alone also serves streaming chat,
as a stream of one chunk.

Token counts. A ``usage`` in an answer (or a chunk) also fills the output's
``prompt_tokens``/``completion_tokens`` (``set_output_context``).

Errors. Nothing raises to the runner: a failure is answered (for a stream: as its last chunk)
``{"code", "description", "details", "http_status", "param"}``, which the endpoint turns into
an OpenAI error with that HTTP status. Raise :class:`OpenAIRequestError` for a bad request
(400, naming the field); a backend's own HTTP errors keep their status. ``openai`` is imported
only when a backend client is used: a model that answers in Python does not need it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from orchard.runners.models.model_class import ModelClass

MODEL_PREDICTION_FAILED = 21313  # the V2 status code of a failed prediction
CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES = (
    "/chat/completions",
    "/completions",
    "/embeddings",
    "/responses",
)
Answer = dict[str, Any]


class OpenAIRequestError(Exception):
    """A request the model cannot serve: answered with HTTP ``status`` naming ``param``."""

    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.param, self.status = message, param, status


class OpenAIModelClass(ModelClass):
    """See the module's docstring."""

    client: Any = None  # an openai.OpenAI of the model's own backend, or None
    model: str | None = None  # the name the backend serves

    @ModelClass.method
    def openai_transport(self, msg: str) -> str:
        """Answer one OpenAI request (JSON with ``openai_endpoint``) with its JSON."""
        try:
            endpoint, request = _parse(msg)
            hook = self._unary_hooks().get(endpoint)
            if hook is None:
                raise _unsupported(endpoint)
            answer = hook(normalise(request, endpoint, stream=False))
            self._count(answer)
            return json.dumps(answer)
        except Exception as exc:
            return error_json(exc)

    @ModelClass.method
    def openai_stream_transport(self, msg: str) -> Iterator[str]:
        """Answer one streaming OpenAI request with its chunks' JSON, one per item."""
        try:
            endpoint, request = _parse(msg)
            hook = self._stream_hooks().get(endpoint)
            if hook is None:
                raise _unsupported(endpoint, streaming=True)
            for chunk in hook(normalise(request, endpoint, stream=True)):
                self._count(chunk)
                yield json.dumps(chunk)
        except Exception as exc:
            yield error_json(exc)

    # -- the hooks: forward to the backend unless a subclass answers itself ------------------

    def chat_completion(self, request: Answer) -> Answer:
        return self._forward(CHAT, request)

    def chat_completion_stream(self, request: Answer) -> Iterator[Answer]:
        if self.client is None and _overrides(self, "chat_completion"):
            yield _as_chunk(self.chat_completion({**request, "stream": False}))
            return
        yield from self._forward_stream(CHAT, request)

    def completion(self, request: Answer) -> Answer:
        return self._forward(COMPLETIONS, request)

    def completion_stream(self, request: Answer) -> Iterator[Answer]:
        yield from self._forward_stream(COMPLETIONS, request)

    def embeddings(self, request: Answer) -> Answer:
        return self._forward(EMBEDDINGS, request)

    def responses(self, request: Answer) -> Answer:
        return self._forward(RESPONSES, request)

    def responses_stream(self, request: Answer) -> Iterator[Answer]:
        yield from self._forward_stream(RESPONSES, request)

    # -- forwarding ----------------------------------------------------------------------------

    def _unary_hooks(self) -> dict[str, Callable[[Answer], Answer]]:
        return {
            CHAT: self.chat_completion,
            COMPLETIONS: self.completion,
            EMBEDDINGS: self.embeddings,
            RESPONSES: self.responses,
        }

    def _stream_hooks(self) -> dict[str, Callable[[Answer], Iterator[Answer]]]:
        return {
            CHAT: self.chat_completion_stream,
            COMPLETIONS: self.completion_stream,
            RESPONSES: self.responses_stream,
        }

    def _backend(self, endpoint: str) -> Any:
        if self.client is None:
            raise _unsupported(endpoint)
        return self.client

    def _forward(self, endpoint: str, request: Answer) -> Answer:
        client = self._backend(endpoint)
        body = {**request, "model": self.model or request.get("model")}
        return dict(client.post(endpoint, body=body, cast_to=object))

    def _forward_stream(self, endpoint: str, request: Answer) -> Iterator[Answer]:
        client = self._backend(endpoint)
        import openai  # only a model with a backend client needs it

        body = {**request, "model": self.model or request.get("model")}
        stream = client.post(
            endpoint, body=body, cast_to=object, stream=True, stream_cls=openai.Stream[object]
        )
        try:
            yield from stream
        finally:
            stream.close()

    def _count(self, answer: Answer) -> None:
        """The answer's token counts, for the output that carries it."""
        usage = answer.get("usage")
        response = answer.get("response")  # a /responses stream's events carry it here
        if usage is None and isinstance(response, dict):
            usage = response.get("usage")
        if not isinstance(usage, dict):
            return
        prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
        completion = usage.get("completion_tokens", usage.get("output_tokens"))
        if isinstance(prompt, int) or isinstance(completion, int):
            self.set_output_context(prompt_tokens=prompt, completion_tokens=completion)


def _parse(msg: str) -> tuple[str, Answer]:
    try:
        request = json.loads(msg)
    except ValueError:
        raise OpenAIRequestError("the request is not JSON") from None
    if not isinstance(request, dict):
        raise OpenAIRequestError("the request must be a JSON object")
    endpoint = request.pop("openai_endpoint", CHAT)
    return str(endpoint), request


def normalise(request: Answer, endpoint: str, stream: bool) -> Answer:
    """What every hook receives: ``max_tokens`` and ``max_completion_tokens`` the same (the
    latter wins) for chat, ``stream`` as asked and, on a stream, usage included."""
    request = {**request, "stream": stream}
    if endpoint == CHAT:
        limit = request.get("max_completion_tokens", request.get("max_tokens"))
        if limit is not None:
            request["max_tokens"] = request["max_completion_tokens"] = limit
    if stream and endpoint in (CHAT, COMPLETIONS):
        request["stream_options"] = {**(request.get("stream_options") or {}), "include_usage": True}
    else:
        request.pop("stream_options", None)
    return request


def error_json(exc: Exception) -> str:
    """A failure as the endpoint reads it (see the module's docstring)."""
    status, param = 500, None
    if isinstance(exc, OpenAIRequestError):
        status, param = exc.status, exc.param
    else:
        found = getattr(exc, "status_code", None)  # an openai.APIStatusError from the backend
        status = found if isinstance(found, int) else 500
    answer = {
        "code": MODEL_PREDICTION_FAILED,
        "description": "Model prediction failed",
        "details": str(exc) or type(exc).__name__,
        "http_status": status,
        "param": param,
    }
    return json.dumps(answer)


def _unsupported(endpoint: str, streaming: bool = False) -> OpenAIRequestError:
    how = "streaming " if streaming else ""
    return OpenAIRequestError(f"this model does not serve {how}{endpoint}", status=404)


def _overrides(model: OpenAIModelClass, name: str) -> bool:
    return getattr(type(model), name) is not getattr(OpenAIModelClass, name)


def _as_chunk(answer: Answer) -> Answer:
    """A whole chat answer as the one chunk of a stream."""
    choices = [
        {
            "index": c.get("index", 0),
            "delta": c.get("message", {}),
            "finish_reason": c.get("finish_reason"),
        }
        for c in answer.get("choices", [])
    ]
    return {**answer, "object": "chat.completion.chunk", "choices": choices}


def chat_answer(
    request: Answer, text: str, prompt_tokens: int, completion_tokens: int, finish: str = "stop"
) -> Answer:
    """A ``chat.completion`` with one assistant message."""
    message = {"role": "assistant", "content": text}
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(request.get("model", "")),
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def chat_chunk(request: Answer, chunk_id: str, delta: Answer, finish: str | None = None) -> Answer:
    """One ``chat.completion.chunk`` (``delta``: ``{"role": ...}`` or ``{"content": ...}``)."""
    return {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": str(request.get("model", "")),
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def usage(prompt_tokens: int, completion_tokens: int) -> Answer:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
