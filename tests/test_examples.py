"""The example model packages (examples/models): each class loaded from its folder, as the
runner loads it, and called through the request adapter in every shape it has, with requests
encoded as the official client encodes them (and in the old format for echo and the
classifier)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import PIL.Image
import pytest
from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2

from orchard.authoring import Concept, Image, ModelClass, signatures
from orchard.codec.serializers import decode, encode_args
from orchard.packaging.inspect import load_model_class
from orchard.packaging.package import load_package
from orchard.runners.models import request_adapter
from orchard.runners.models.model_class import MethodType
from orchard.runners.utils.method_signatures import build_field

SC = status_code_pb2.StatusCode
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "models"


def load(name: str) -> ModelClass:
    cls = load_model_class(EXAMPLES / name, stub_missing=False)
    assert issubclass(cls, ModelClass)
    model = cls()
    model.load_model()
    return model


def request(
    model: ModelClass, method: str, params: dict[str, Any] | None = None, **kwargs: Any
) -> service_pb2.PostModelOutputsRequest:
    """One input naming ``method``, a part per argument (the official typed client's form)."""
    sig = {s.name: s for s in signatures(model)}[method]
    inp = resources_pb2.Input()
    encode_args(sig.input_fields, kwargs, inp.data)
    inp.data.metadata["_method_name"] = method
    req = service_pb2.PostModelOutputsRequest(inputs=[inp])
    if params:
        req.model.model_version.output_info.params.update(params)
    return req


def legacy(**data: Any) -> service_pb2.PostModelOutputsRequest:
    """An old-format input: a payload, no parts, no method name."""
    return service_pb2.PostModelOutputsRequest(
        inputs=[resources_pb2.Input(data=resources_pb2.Data(**data))]
    )


def value(output: resources_pb2.Output, annotation: Any = str) -> Any:
    assert output.status.code == SC.SUCCESS, output.status.description
    (part,) = output.data.parts
    return decode(build_field("return", annotation)[0], part.data)


def values(responses: Any, annotation: Any = str) -> list[Any]:
    return [value(r.outputs[0], annotation) for r in responses]


def png(*colours: tuple[int, int, int], size: int = 8) -> bytes:
    """An image of vertical stripes of equal width, one per colour."""
    picture = PIL.Image.new("RGB", (size * len(colours), size))
    for i, colour in enumerate(colours):
        picture.paste(colour, (i * size, 0, (i + 1) * size, size))
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()


def test_every_example_is_a_valid_package():
    for name in ("echo", "image-classifier", "token-streamer", "gpu_probe"):
        package = load_package(EXAMPLES / name)
        assert package.config.model.app_id == "examples"
        assert package.config.build_info.python_version == "3.11"


# -- echo ------------------------------------------------------------------------------------


def test_echo_has_all_three_shapes():
    shapes = {s.name: s.method_type for s in signatures(load("echo"))}
    assert shapes == {
        "predict": MethodType.UNARY_UNARY,
        "generate": MethodType.UNARY_STREAMING,
        "stream": MethodType.STREAMING_STREAMING,
    }


def test_echo_predict_returns_the_text():
    echo = load("echo")
    response = request_adapter.predict(echo, request(echo, "predict", text="hi  there"))
    assert value(response.outputs[0]) == "hi  there"


def test_echo_generate_yields_one_item_per_word():
    echo = load("echo")
    generated = request_adapter.generate(echo, request(echo, "generate", text="one two  three"))
    assert values(generated) == ["one ", "two  ", "three"]  # joined: the text


def test_echo_stream_echoes_each_item():
    echo = load("echo")
    first = request(echo, "stream", input_iterator="a")
    stream_field = {s.name: s for s in signatures(echo)}["stream"].input_fields[0]
    later = []
    for item in ("b", "c"):
        inp = resources_pb2.Input()
        encode_args([stream_field], {"input_iterator": item}, inp.data)
        later.append(service_pb2.PostModelOutputsRequest(inputs=[inp]))
    assert values(request_adapter.stream(echo, iter([first, *later]))) == ["a", "b", "c"]


def test_echo_answers_an_old_format_text_input_in_text_raw():
    echo = load("echo")
    response = request_adapter.predict(echo, legacy(text=resources_pb2.Text(raw="plain old")))
    assert response.status.code == SC.SUCCESS
    assert response.outputs[0].data.text.raw == "plain old"
    streamed = request_adapter.generate(echo, legacy(text=resources_pb2.Text(raw="x y")))
    assert [r.outputs[0].data.text.raw for r in streamed] == ["x ", "y"]


# -- image-classifier ------------------------------------------------------------------------


def concepts(response: service_pb2.MultiOutputResponse) -> list[tuple[str, float]]:
    return [(c.name, c.value) for c in value(response.outputs[0], list[Concept])]


def test_classifier_scores_the_share_of_each_dominant_colour():
    model = load("image-classifier")
    red = request(model, "predict", image=Image(bytes=png((230, 20, 20))))
    assert concepts(request_adapter.predict(model, red)) == [("red", 1.0)]
    striped = png((230, 20, 20), (20, 50, 230), (20, 50, 230), (250, 250, 250))
    striped_request = request(model, "predict", image=Image(bytes=striped))
    answer = concepts(request_adapter.predict(model, striped_request))
    assert answer[0] == ("blue", 0.5)
    assert dict(answer) == {"blue": 0.5, "red": 0.25, "white": 0.25}


def test_classifier_top_k_and_scores_that_sum_to_one():
    model = load("image-classifier")
    image = Image(bytes=png((0, 0, 0), (128, 128, 128), (240, 220, 40), (40, 170, 60)))
    everything = request_adapter.predict(model, request(model, "predict", image=image, top_k=10))
    assert sum(score for _, score in concepts(everything)) == pytest.approx(1.0)
    one = request_adapter.predict(model, request(model, "predict", {"top_k": 1}, image=image))
    assert len(concepts(one)) == 1
    again = request_adapter.predict(model, request(model, "predict", image=image, top_k=10))
    assert concepts(again) == concepts(everything)  # deterministic


def test_classifier_takes_an_old_format_image_and_answers_in_concepts():
    model = load("image-classifier")
    response = request_adapter.predict(
        model, legacy(image=resources_pb2.Image(base64=png((20, 50, 230))))
    )
    assert response.status.code == SC.SUCCESS, response.status.description
    assert [(c.id, c.value) for c in response.outputs[0].data.concepts] == [("blue", 1.0)]


def test_classifier_fails_an_input_that_is_not_an_image():
    model = load("image-classifier")
    response = request_adapter.predict(
        model, request(model, "predict", image=Image(bytes=b"not a png"))
    )
    assert response.status.code == SC.FAILURE
    assert "ImageClassifier.predict raised" in response.outputs[0].status.description


# -- token-streamer --------------------------------------------------------------------------


def test_token_streamer_generates_the_completion_predict_returns():
    model = load("token-streamer")
    generated = list(
        request_adapter.generate(
            model, request(model, "generate", prompt="tell me", max_tokens=5, delay_ms=0.0)
        )
    )
    tokens = values(generated)
    assert len(tokens) == 5 and all(t.startswith(" ") for t in tokens)
    counts = [(r.outputs[0].prompt_tokens, r.outputs[0].completion_tokens) for r in generated]
    assert counts == [(2, 1), (2, 2), (2, 3), (2, 4), (2, 5)]
    whole = request_adapter.predict(
        model, request(model, "predict", prompt="tell me", max_tokens=5)
    )
    assert value(whole.outputs[0]) == "".join(tokens)
    assert whole.outputs[0].completion_tokens == 5


def test_token_streamer_is_deterministic_per_prompt():
    model = load("token-streamer")

    def complete(prompt: str) -> str:
        return value(
            request_adapter.predict(model, request(model, "predict", prompt=prompt)).outputs[0]
        )

    assert complete("a prompt") == complete("a prompt")
    assert complete("a prompt") != complete("another prompt")
    assert len(complete("a prompt").split()) == 32


def test_token_streamer_delay_default_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("TOKEN_STREAMER_DELAY_MS", "5")
    sig = {s.name: s for s in signatures(load("token-streamer"))}["generate"]
    delay = {f.name: f for f in sig.input_fields}["delay_ms"]
    assert (delay.default, delay.is_param, delay.model_type_range_info.min) == ("5.0", True, 0.0)
    monkeypatch.delenv("TOKEN_STREAMER_DELAY_MS")
    sig = {s.name: s for s in signatures(load("token-streamer"))}["generate"]
    assert {f.name: f for f in sig.input_fields}["delay_ms"].default == "20.0"


def test_token_streamer_rejects_a_negative_delay():
    model = load("token-streamer")
    responses = list(
        request_adapter.generate(model, request(model, "generate", prompt="x", delay_ms=-1.0))
    )
    assert responses[-1].status.code == SC.FAILURE
    assert "below min_value" in responses[-1].outputs[0].status.description


# -- gpu_probe -------------------------------------------------------------------------------


def test_gpu_probe_without_a_gpu_loads_and_says_why_it_has_none(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no device, whether or not a driver is here
    probe = load("gpu_probe")
    report = json.loads(value(request_adapter.predict(probe, request(probe, "predict")).outputs[0]))
    assert report["gpu"] is None and report["error"].startswith("no GPU")
    assert report["cuda_visible_devices"] == ""
