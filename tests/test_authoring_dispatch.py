"""The request adapter: predict / generate / stream (sync and async) against V2 requests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any, Optional

import PIL.Image
import pytest
from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2
from google.protobuf import json_format

from orchard.authoring import Concept, Image, ModelClass, NamedFields, Param, Text, signatures
from orchard.codec.serializers import decode, encode_args
from orchard.runners.models import request_adapter
from orchard.runners.utils.method_signatures import build_field

SC = status_code_pb2.StatusCode


class Echo(ModelClass):
    def __init__(self) -> None:
        self.closed: list[str] = []

    @ModelClass.method
    def predict(self, text: str, times: int = Param(1, min_value=1, max_value=5)) -> str:
        if text == "boom":
            raise ValueError("exploded on purpose")
        return text * times

    @ModelClass.method
    def label(self, image: Image, top: int = 1) -> list[Concept]:
        return [Concept(f"size-{len(image.bytes or b'')}", 0.5)][:top]

    @ModelClass.method
    def wrong(self, x: int) -> str:
        return x

    @ModelClass.method
    def nothing(self) -> str:
        return None

    @ModelClass.method
    def counted(self, text: str) -> str:
        self.set_output_context(prompt_tokens=3, completion_tokens=len(text))
        return text

    @ModelClass.method
    def generate(self, text: str, fail_at: int = -1) -> Iterator[str]:
        try:
            for i, word in enumerate(text.split()):
                if i == fail_at:
                    raise RuntimeError(f"failed at {i}")
                self.set_output_context(completion_tokens=i + 1)
                yield word
        finally:
            self.closed.append("generate")

    @ModelClass.method
    def not_a_stream(self, text: str) -> Iterator[str]:
        return 42

    @ModelClass.method
    def stream(self, chunks: Iterator[str], sep: str = "") -> Iterator[str]:
        for chunk in chunks:
            yield chunk + sep


class AsyncEcho(ModelClass):
    @ModelClass.method
    async def predict(self, text: str) -> str:
        await asyncio.sleep(0)
        if text == "boom":
            raise ValueError("async boom")
        return text.upper()

    @ModelClass.method
    async def generate(self, text: str) -> AsyncIterator[str]:
        for word in text.split():
            await asyncio.sleep(0)
            self.set_output_context(completion_tokens=len(word))
            yield word

    @ModelClass.method
    async def stream(self, chunks: AsyncIterator[str], sep: str = "") -> AsyncIterator[str]:
        async for chunk in chunks:
            yield chunk.upper() + sep


# -- building requests the way the official typed client does -------------------------------


def _input(model: type[ModelClass], method: str | None, **kwargs: Any) -> resources_pb2.Input:
    inp = resources_pb2.Input()
    if method is not None:
        sig = {s.name: s for s in signatures(model)}[method]
        encode_args(sig.input_fields, kwargs, inp.data)
        inp.data.metadata["_method_name"] = method
    return inp


def _request(*inputs: resources_pb2.Input, **params: Any) -> service_pb2.PostModelOutputsRequest:
    request = service_pb2.PostModelOutputsRequest(inputs=inputs)
    if params:
        request.model.model_version.output_info.params.update(params)
    return request


def _call(model: type[ModelClass], method: str | None = None, **kwargs: Any) -> Any:
    return _request(_input(model, method, **kwargs))


def _named(method: str) -> service_pb2.PostModelOutputsRequest:
    """A request naming ``method`` with no arguments at all."""
    inp = resources_pb2.Input()
    inp.data.metadata["_method_name"] = method
    return _request(inp)


def _legacy(**data: Any) -> service_pb2.PostModelOutputsRequest:
    return _request(resources_pb2.Input(data=resources_pb2.Data(**data)))


def _value(output: resources_pb2.Output, annotation: Any = str) -> Any:
    assert output.status.code == SC.SUCCESS, output.status.description
    (part,) = output.data.parts
    assert part.id == "return"
    return decode(build_field("return", annotation)[0], part.data)


# -- predict --------------------------------------------------------------------------------


def test_predict_calls_the_named_method():
    response = request_adapter.predict(Echo(), _call(Echo, "predict", text="ab", times=2))
    assert response.status.code == SC.SUCCESS
    assert _value(response.outputs[0]) == "abab"
    labelled = request_adapter.predict(Echo(), _call(Echo, "label", image=Image(bytes=b"xyz")))
    assert _value(labelled.outputs[0], list[Concept]) == [Concept("size-3", 0.5)]


def test_defaults_apply_and_params_are_checked():
    assert (
        _value(request_adapter.predict(Echo(), _call(Echo, "predict", text="a")).outputs[0]) == "a"
    )
    response = request_adapter.predict(Echo(), _call(Echo, "predict", text="a", times=9))
    assert response.status.code == SC.FAILURE
    assert response.outputs[0].status.description == (
        "bad arguments for Echo.predict: argument 'times': 9 is above max_value 5"
    )


def test_a_batch_calls_the_method_per_input_and_mixes_statuses():
    inputs = [_input(Echo, "predict", text=t) for t in ("a", "boom", "c")]
    response = request_adapter.predict(Echo(), _request(*inputs))
    assert response.status.code == SC.MIXED_STATUS
    assert response.status.description == "1 of 3 inputs failed; see each output's status"
    assert [o.status.code for o in response.outputs] == [SC.SUCCESS, SC.FAILURE, SC.SUCCESS]
    assert _value(response.outputs[2]) == "c"


def test_a_method_that_raises_fails_its_output_without_a_traceback():
    response = request_adapter.predict(Echo(), _call(Echo, "predict", text="boom"))
    assert response.status.code == SC.FAILURE
    status = response.outputs[0].status
    assert status.code == SC.FAILURE
    assert status.description == "Echo.predict raised ValueError: exploded on purpose"
    assert status.details == "exploded on purpose"
    assert "Traceback" not in str(response)
    all_failed = request_adapter.predict(
        Echo(), _request(*[_input(Echo, "predict", text="boom")] * 2)
    )
    assert all_failed.status.description.startswith("all 2 inputs failed; the first: Echo.predict")


def test_return_values_that_do_not_fit_fail_the_output():
    wrong = request_adapter.predict(Echo(), _call(Echo, "wrong", x=3)).outputs[0].status
    assert wrong.code == SC.FAILURE
    assert "Echo.wrong returned a value that does not fit its annotation (STR)" in wrong.description
    assert "expected str, got int 3" in wrong.description
    nothing = request_adapter.predict(Echo(), _named("nothing")).outputs[0].status
    assert "None is not a value" in nothing.description


def test_missing_arguments_and_unknown_methods_are_named():
    missing = request_adapter.predict(Echo(), _named("predict"))
    assert missing.outputs[0].status.description == (
        "bad arguments for Echo.predict: missing required argument 'text' (STR); send it as the "
        "input part with id 'text'"
    )
    request = _call(Echo, "predict", text="x")
    request.inputs[0].data.metadata["_method_name"] = "nope"
    unknown = request_adapter.predict(Echo(), request)
    assert unknown.status.code == SC.FAILURE
    assert unknown.status.description.startswith(
        "Echo has no method 'nope'; available methods: predict (UNARY_UNARY), label (UNARY_UNARY)"
    )
    assert unknown.outputs[0].status.code == SC.FAILURE


def test_a_method_is_served_only_by_its_shape():
    response = request_adapter.predict(Echo(), _call(Echo, "generate", text="a b"))
    assert response.status.description == (
        "Echo.generate is UNARY_STREAMING; call it with GenerateModelOutputs (the client's "
        "generate-style call)"
    )
    stream = list(request_adapter.generate(Echo(), _call(Echo, "stream", chunks="x")))
    assert "STREAMING_STREAMING; call it with StreamModelOutputs" in stream[0].status.description


def test_without_a_method_name_the_default_is_by_name_then_by_shape():
    class OnlyOne(ModelClass):
        @ModelClass.method
        def answer(self, q: str) -> str:
            return q + "?"

    class Two(OnlyOne):
        @ModelClass.method
        def other(self, q: str) -> str:
            return q

    request = _request(_input(OnlyOne, "answer", q="why"))
    request.inputs[0].data.metadata.Clear()
    assert _value(request_adapter.predict(OnlyOne(), request).outputs[0]) == "why?"
    ambiguous = request_adapter.predict(Two(), request)
    assert "names no method (inputs[0].data.metadata['_method_name'])" in (
        ambiguous.status.description
    )
    assert "available methods: answer (UNARY_UNARY), other (UNARY_UNARY)" in (
        ambiguous.status.description
    )


def test_a_request_without_inputs_fails():
    response = request_adapter.predict(Echo(), _request())
    assert response.status.code == SC.FAILURE
    assert "no inputs" in response.status.description


def test_get_signatures_answers_the_official_json():
    request = _request(resources_pb2.Input())
    request.inputs[0].data.parts.add()
    request.inputs[0].data.metadata["_method_name"] = "_GET_SIGNATURES"
    response = request_adapter.predict(Echo(), request)
    assert response.status.code == SC.SUCCESS
    parsed = json.loads(response.outputs[0].data.text.raw)
    assert list(parsed) == [s.name for s in signatures(Echo)]
    assert [json_format.ParseDict(v, resources_pb2.MethodSignature()) for v in parsed.values()] == (
        signatures(Echo)
    )


def test_old_format_inputs_reach_the_first_parameter_and_outputs_fill_text_raw():
    response = request_adapter.predict(Echo(), _legacy(text=resources_pb2.Text(raw="hey")))
    assert response.outputs[0].data.text.raw == "hey"
    assert _value(response.outputs[0]) == "hey"
    image = request_adapter.predict(
        Echo(), _request(_legacy(image=resources_pb2.Image(base64=b"12345")).inputs[0])
    )
    assert image.status.code == SC.FAILURE  # predict takes str; image inputs name their method
    request = _legacy(image=resources_pb2.Image(base64=b"12345"))
    request.inputs[0].data.metadata["_method_name"] = "label"
    labelled = request_adapter.predict(Echo(), request)
    assert [c.name for c in labelled.outputs[0].data.concepts] == ["size-5"]


def test_inference_params_fill_missing_parameters():
    request = _legacy(text=resources_pb2.Text(raw="ab"))
    request.model.model_version.output_info.params.update({"times": "3"})
    assert request_adapter.predict(Echo(), request).outputs[0].data.text.raw == "ababab"
    parts_win = _call(Echo, "predict", text="x", times=2)
    parts_win.model.model_version.output_info.params.update({"times": 4})
    assert _value(request_adapter.predict(Echo(), parts_win).outputs[0]) == "xx"
    bad = _call(Echo, "predict", text="x")
    bad.model.model_version.output_info.params.update({"times": "many"})
    assert "inference param 'times'='many' does not fit the parameter's type INT" in (
        request_adapter.predict(Echo(), bad).outputs[0].status.description
    )
    image = _named("label")
    image.model.model_version.output_info.params.update({"image": "x"})
    assert "cannot set a parameter of type IMAGE; send it as an input part" in (
        request_adapter.predict(Echo(), image).outputs[0].status.description
    )


def test_token_counts_fill_the_output():
    output = request_adapter.predict(Echo(), _call(Echo, "counted", text="abcd")).outputs[0]
    assert (output.prompt_tokens, output.completion_tokens) == (3, 4)


# -- generate -------------------------------------------------------------------------------


def test_generate_yields_one_response_per_result():
    responses = list(request_adapter.generate(Echo(), _call(Echo, "generate", text="a b c")))
    assert [_value(r.outputs[0]) for r in responses] == ["a", "b", "c"]
    assert all(r.status.code == SC.SUCCESS for r in responses)
    assert [r.outputs[0].completion_tokens for r in responses] == [1, 2, 3]


def test_generate_serves_a_unary_method_as_a_stream_of_one():
    responses = list(request_adapter.generate(Echo(), _call(Echo, "predict", text="x")))
    assert [_value(r.outputs[0]) for r in responses] == ["x"]


def test_generate_fails_midway_with_one_final_failure():
    model = Echo()
    responses = list(
        request_adapter.generate(model, _call(Echo, "generate", text="a b c", fail_at=2))
    )
    assert [r.status.code for r in responses] == [SC.SUCCESS, SC.SUCCESS, SC.FAILURE]
    assert responses[-1].outputs[0].status.description == (
        "Echo.generate raised RuntimeError: failed at 2"
    )
    assert model.closed == ["generate"]


def test_stopping_early_closes_the_model_generator():
    model = Echo()
    responses = request_adapter.generate(model, _call(Echo, "generate", text="a b c"))
    next(responses)
    responses.close()
    assert model.closed == ["generate"]


def test_generate_rejects_batches_and_non_streams():
    two = _request(*[_input(Echo, "generate", text="a")] * 2)
    (response,) = request_adapter.generate(Echo(), two)
    assert response.status.description == (
        "generate takes exactly one input per request, got 2; send one request per input"
    )
    (bad,) = request_adapter.generate(Echo(), _call(Echo, "not_a_stream", text="a"))
    assert "returned int but is annotated to return a stream; yield each result" in (
        bad.outputs[0].status.description
    )
    (missing,) = request_adapter.generate(Echo(), _named("generate"))
    assert "bad arguments for Echo.generate: missing required argument 'text'" in (
        missing.status.description
    )


# -- stream ---------------------------------------------------------------------------------


def _stream_requests(model: type[ModelClass], items: list[str], **kwargs: Any) -> list[Any]:
    first = _call(model, "stream", chunks=items[0], **kwargs)
    sig = {s.name: s for s in signatures(model)}["stream"]
    later = []
    for item in items[1:]:
        inp = resources_pb2.Input()
        encode_args([sig.input_fields[0]], {"chunks": item}, inp.data)
        inp.data.metadata["_method_name"] = "stream"
        later.append(_request(inp))
    return [first, *later]


def test_stream_takes_arguments_from_the_first_request_and_items_from_all():
    responses = list(
        request_adapter.stream(Echo(), iter(_stream_requests(Echo, ["a", "b"], sep="!")))
    )
    assert [_value(r.outputs[0]) for r in responses] == ["a!", "b!"]
    assert list(request_adapter.stream(Echo(), iter([]))) == []


def test_stream_items_in_the_old_format_work_too():
    requests = [_legacy(text=resources_pb2.Text(raw=t)) for t in ("x", "y")]
    responses = list(request_adapter.stream(Echo(), iter(requests)))
    assert [r.outputs[0].data.text.raw for r in responses] == ["x", "y"]


def test_a_bad_later_stream_request_ends_the_stream_with_a_failure():
    requests = _stream_requests(Echo, ["a"])
    requests.append(_request())
    responses = list(request_adapter.stream(Echo(), iter(requests)))
    assert [r.status.code for r in responses] == [SC.SUCCESS, SC.FAILURE]
    assert responses[-1].outputs[0].status.description == (
        "bad arguments for Echo.stream: stream request 1 has 0 inputs; send exactly one"
    )


# -- async methods and the async entry points -----------------------------------------------


def test_sync_entry_points_run_async_methods_on_a_private_loop():
    model = AsyncEcho()
    assert (
        _value(request_adapter.predict(model, _call(AsyncEcho, "predict", text="a")).outputs[0])
        == "A"
    )
    generated = list(request_adapter.generate(model, _call(AsyncEcho, "generate", text="ab c")))
    assert [_value(r.outputs[0]) for r in generated] == ["ab", "c"]
    assert [r.outputs[0].completion_tokens for r in generated] == [2, 1]
    streamed = list(request_adapter.stream(model, iter(_stream_requests(AsyncEcho, ["x", "y"]))))
    assert [_value(r.outputs[0]) for r in streamed] == ["X", "Y"]


async def test_sync_entry_points_refuse_async_methods_inside_a_running_loop():
    response = request_adapter.predict(AsyncEcho(), _call(AsyncEcho, "predict", text="a"))
    assert response.status.code == SC.FAILURE
    assert (
        "call orchard.runners.models.request_adapter.apredict instead"
        in response.status.description
    )
    (refused,) = request_adapter.generate(AsyncEcho(), _call(AsyncEcho, "generate", text="a"))
    assert "request_adapter.agenerate instead" in refused.status.description


async def _collect(responses: AsyncIterator[Any]) -> list[Any]:
    return [r async for r in responses]


async def _requests(items: list[Any]) -> AsyncIterator[Any]:
    for item in items:
        await asyncio.sleep(0)
        yield item


@pytest.mark.parametrize("model", [Echo, AsyncEcho], ids=["sync-methods", "async-methods"])
async def test_async_entry_points_serve_every_model(model):
    upper = model is AsyncEcho
    batch = _request(*[_input(model, "predict", text=t) for t in ("a", "boom")])
    response = await request_adapter.apredict(model(), batch)
    assert response.status.code == SC.MIXED_STATUS
    assert _value(response.outputs[0]) == ("A" if upper else "a")
    generated = await _collect(
        request_adapter.agenerate(model(), _call(model, "generate", text="p q"))
    )
    assert [_value(r.outputs[0]) for r in generated] == ["p", "q"]
    requests = _requests(_stream_requests(model, ["m", "n"], sep="."))
    streamed = await _collect(request_adapter.astream(model(), requests))
    assert [_value(r.outputs[0]) for r in streamed] == (["M.", "N."] if upper else ["m.", "n."])


async def test_async_failures_and_token_counts():
    response = await request_adapter.apredict(AsyncEcho(), _call(AsyncEcho, "predict", text="boom"))
    assert (
        response.outputs[0].status.description == "AsyncEcho.predict raised ValueError: async boom"
    )
    model = Echo()
    generated = await _collect(
        request_adapter.agenerate(model, _call(Echo, "generate", text="a b", fail_at=1))
    )
    assert [r.status.code for r in generated] == [SC.SUCCESS, SC.FAILURE]
    assert generated[0].outputs[0].completion_tokens == 1
    assert model.closed == ["generate"]
    counted = await request_adapter.apredict(Echo(), _call(Echo, "counted", text="xy"))
    assert counted.outputs[0].completion_tokens == 2
    sigs = await request_adapter.apredict(Echo(), _get_signatures())
    assert json.loads(sigs.outputs[0].data.text.raw)


def _get_signatures() -> service_pb2.PostModelOutputsRequest:
    request = _request(resources_pb2.Input())
    request.inputs[0].data.metadata["_method_name"] = "_GET_SIGNATURES"
    return request


def test_text_parameters_accept_text_messages():
    class T(ModelClass):
        @ModelClass.method
        def predict(self, text: Text) -> Text:
            return Text(text.text[::-1], url=text.url)

    response = request_adapter.predict(T(), _legacy(text=resources_pb2.Text(raw="abc", url="u")))
    assert (response.outputs[0].data.text.raw, response.outputs[0].data.text.url) == ("cba", "u")


class Pair(NamedFields):
    left: str
    right: int


def test_parameters_arrive_as_their_declared_python_types():
    class Typed(ModelClass):
        @ModelClass.method
        def predict(
            self,
            pair: Pair,
            picture: PIL.Image.Image,
            extra: Optional[PIL.Image.Image] = None,  # noqa: UP045
        ) -> str:
            assert isinstance(pair, Pair) and extra is None
            return f"{pair.left}{pair.right} {picture.size[0]}x{picture.size[1]}"

    picture = PIL.Image.new("L", (3, 2))
    request = _call(Typed, "predict", pair=Pair(left="x", right=1), picture=picture)
    assert _value(request_adapter.predict(Typed(), request).outputs[0]) == "x1 3x2"


def test_undecodable_arguments_and_unservable_models_fail_in_band():
    class Pictures(ModelClass):
        @ModelClass.method
        def predict(self, picture: PIL.Image.Image) -> str:
            return "never"

    request = _call(Pictures, "predict", picture=Image(bytes=b"not an image"))
    status = request_adapter.predict(Pictures(), request).outputs[0].status
    assert status.code == SC.FAILURE
    assert status.description.startswith(
        "bad arguments for Pictures.predict: argument 'picture': cannot convert the value: "
        "UnidentifiedImageError"
    )

    class Broken(ModelClass):
        @ModelClass.method
        def predict(self, x: str) -> Undefined:  # noqa: F821
            return x

    for request in (_legacy(text=resources_pb2.Text(raw="x")), _get_signatures()):
        response = request_adapter.predict(Broken(), request)
        assert response.status.code == SC.FAILURE
        assert response.status.description.startswith(
            "the model cannot be served: Broken.predict: an annotation names something undefined"
        )
