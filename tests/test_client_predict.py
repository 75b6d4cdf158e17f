"""What ``Model`` sends and how it reads the answers, without a server: the nine ``*_by_*``
helpers in both routing forms, model URLs, routing checks, the 128-input limit, the input type,
waiting for a deploying model (on a fake clock), the first-response check of streams, and the
typed client. The wire is replaced by a recorder; where a model answers, it is a real
``ModelClass`` behind the runner's request adapter (``orchard.runners.models.request_adapter``)."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from clarifai_grpc.grpc.api.status import status_pb2
from google.protobuf import json_format

from orchard import errors
from orchard.authoring import signatures
from orchard.client import contexts
from orchard.client.base import ENV_NAMES
from orchard.client.model import Model, ModelRef, parse_model_url
from orchard.client.predictions import WAITING, Replay, Retry
from tests.predict_wire import OK, SC, Echo, FakeTime, Wire, install, response
from tests.waiting import wait_for

URL = "https://example.com/a.jpg"
PARAMS = {"temperature": 0.5}
CONFIG = {"max_concepts": 3}


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for names in ENV_NAMES.values():
        for name in names:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(contexts.CONFIG_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))


@pytest.fixture
def net(monkeypatch: pytest.MonkeyPatch) -> Wire:
    return install(monkeypatch)


@pytest.fixture
def clock() -> FakeTime:
    return FakeTime()


def make_model(**kwargs: Any) -> Model:
    """A text model of alice's, called by bob (the PAT's owner)."""
    args: dict[str, Any] = {
        "model_id": "m",
        "app_id": "a",
        "user_id": "alice",
        "base_url": "127.0.0.1:1",
        "pat": "p",
        "model_type_id": "text-to-text",
        "model_version": {"id": "v1"},
    }
    return Model(**{**args, **kwargs})


def text_data(**fields: Any) -> resources_pb2.Data:
    return json_format.ParseDict(fields, resources_pb2.Data())


# -- model URLs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "ref"),
    [
        ("https://clarifai.com/u/a/models/m", ModelRef("u", "a", "m")),
        ("https://h:8080/u/a/models/m/versions/v2?x=1#top", ModelRef("u", "a", "m", "v2")),
        ("http://127.0.0.1:7600/u/a/models/m/", ModelRef("u", "a", "m")),
        ("u/a/models/m", ModelRef("u", "a", "m")),
        ("host.example/u/a/models/m/versions/v", ModelRef("u", "a", "m", "v")),
    ],
)
def test_model_urls(url, ref):
    assert parse_model_url(url) == ref


@pytest.mark.parametrize("url", ["https://h/u/models/m", "m", "https://h/u/a/models/", ""])
def test_not_a_model_url(url):
    with pytest.raises(errors.UserError, match="not a model URL; expected https://HOST/USER_ID"):
        parse_model_url(url)


def test_model_from_url(net):
    model = Model("https://h/alice/a/models/m/versions/v9", base_url="127.0.0.1:1", pat="p")
    assert (model.user_id, model.app_id, model.id, model.version_id) == ("alice", "a", "m", "v9")
    model.predict_by_bytes(b"hi", "text")
    [request] = net.sent("PostModelOutputs")
    assert (request.user_app_id.user_id, request.user_app_id.app_id) == ("alice", "a")
    assert (request.model_id, request.version_id) == ("m", "v9")
    assert not request.HasField("runner_selector")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"url": "u/a/models/m", "model_id": "m"}, "You can only specify one of url or model_id"),
        ({}, "You must specify one of url or model_id"),
        ({"url": "u/a/models/m", "user_id": "x"}, "user_id='x' contradicts the URL's 'u'"),
        ({"model_id": "m", "model_version": 3}, "model_version must be a version id"),
    ],
)
def test_model_naming_mistakes(net, kwargs, message):
    with pytest.raises(errors.UserError, match=message):
        Model(base_url="127.0.0.1:1", pat="p", **kwargs)
    assert net.calls == []


def test_model_version_as_a_string(net):
    assert make_model(model_version="v7").version_id == "v7"


# -- the nine helpers, in both routing forms -----------------------------------------------------


def _call_helper(model: Model, name: str, tmp_path: Path, routing: dict[str, Any]) -> None:
    file = tmp_path / "input.txt"
    file.write_bytes(b"from a file")
    family, source = name.split("_by_")
    value: Any = {"url": URL, "bytes": b"hello", "filepath": file}[source]
    if family == "stream" and source != "filepath":
        value = iter([value, value])
    result = getattr(model, name)(value, "text", PARAMS, CONFIG, **routing)
    if family != "predict":
        list(result)


HELPERS = [f"{family}_by_{source}" for family in ("predict", "generate", "stream")
           for source in ("url", "bytes", "filepath")]  # fmt: skip
RPCS = {
    "predict": "PostModelOutputs",
    "generate": "GenerateModelOutputs",
    "stream": "StreamModelOutputs",
}
ROUTES = {
    "deployment": (
        {"deployment_id": "dep"},
        {"deployment": {"id": "dep", "user_id": "bob"}},
    ),
    "nodepool": (
        {"compute_cluster_id": "cc", "nodepool_id": "np"},
        {"nodepool": {"id": "np", "compute_cluster": {"id": "cc", "user_id": "bob"}}},
    ),
}


@pytest.mark.parametrize("form", ["constructor", "per_call"])
@pytest.mark.parametrize("route", sorted(ROUTES))
@pytest.mark.parametrize("name", HELPERS)
def test_helper_requests(net, tmp_path, name, route, form):
    family, source = name.split("_by_")
    net.script("GenerateModelOutputs", [response("g")])
    net.script("StreamModelOutputs", [response("s")])
    routing, selector = ROUTES[route]
    model = make_model(**routing) if form == "constructor" else make_model()
    _call_helper(model, name, tmp_path, {} if form == "constructor" else routing)

    confirm = "GetDeployment" if route == "deployment" else "GetNodepool"
    assert net.names()[:2] == ["GetUser", confirm]
    [check] = net.sent(confirm)
    assert check.user_app_id.user_id == "bob"
    sent = net.sent(RPCS[family])
    assert len(sent) == 1
    requests = sent[0] if family == "stream" else [sent[0]]
    expected_data = {
        "url": text_data(text={"url": URL}),
        "bytes": text_data(text={"raw": "hello"}),
        "filepath": text_data(text={"raw": "from a file"}),
    }[source]
    assert len(requests) == (2 if family == "stream" and source != "filepath" else 1)
    for request in requests:
        assert (request.user_app_id.user_id, request.user_app_id.app_id) == ("alice", "a")
        assert (request.model_id, request.version_id) == ("m", "v1")
        assert request.runner_selector == json_format.ParseDict(
            selector, resources_pb2.RunnerSelector()
        )
        assert [inp.data for inp in request.inputs] == [expected_data]
        info = request.model.model_version.output_info
        assert json_format.MessageToDict(info.params) == PARAMS
        assert info.output_config.max_concepts == 3


@pytest.mark.parametrize(
    ("input_type", "source", "expected"),
    [
        ("image", "url", {"image": {"url": URL}}),
        ("image", "bytes", {"image": {"base64": "AAE="}}),
        ("video", "url", {"video": {"url": URL}}),
        ("video", "bytes", {"video": {"base64": "AAE="}}),
        ("audio", "url", {"audio": {"url": URL}}),
        ("audio", "bytes", {"audio": {"base64": "AAE="}}),
        ("text", "url", {"text": {"url": URL}}),
    ],
)
def test_inputs_as_the_official_sdk_builds_them(net, input_type, source, expected):
    value = URL if source == "url" else b"\x00\x01"
    getattr(make_model(), f"predict_by_{source}")(value, input_type)
    [request] = net.sent("PostModelOutputs")
    assert request.inputs[0] == resources_pb2.Input(data=text_data(**expected))
    assert not request.HasField("model")  # no params, no output config: nothing to override


def test_a_call_routes_alone_and_the_selector_is_confirmed_once(net):
    model = make_model(deployment_id="dep")
    model.predict_by_bytes(b"a", "text")
    model.predict_by_bytes(b"b", "text", compute_cluster_id="cc", nodepool_id="np")
    model.predict_by_bytes(b"c", "text", compute_cluster_id="cc", nodepool_id="np")
    model.predict_by_bytes(b"d", "text")
    selectors = [r.runner_selector for r in net.sent("PostModelOutputs")]
    assert [s.ListFields()[0][0].name for s in selectors] == [
        "deployment",
        "nodepool",
        "nodepool",
        "deployment",
    ]
    assert net.names().count("GetDeployment") == net.names().count("GetNodepool") == 1
    assert net.names().count("GetUser") == 1


def test_owners_of_deployments_and_clusters(net):
    model = make_model(deployment_id="dep", deployment_user_id="org")
    assert "GetUser" not in net.names()
    assert model.runner_selector.deployment.user_id == "org"
    model.predict_by_bytes(b"x", "text", user_id="carol")  # SDK <= 11.2: the owner, per call
    model.predict_by_bytes(b"x", "text", nodepool_id="np", compute_cluster_id="cc", user_id="dan")
    first, second = net.sent("PostModelOutputs")
    assert first.runner_selector.deployment.user_id == "carol"
    assert second.runner_selector.nodepool.compute_cluster.user_id == "dan"


def test_the_configured_user_is_the_caller(net, monkeypatch):
    monkeypatch.setenv("ORCHARD_USER_ID", "erin")
    model = Model(model_id="m", app_id="a", base_url="127.0.0.1:1", pat="p", deployment_id="d")
    assert "GetUser" not in net.names()
    assert model.runner_selector.deployment.user_id == "erin"


def test_a_nodepool_without_its_cluster_is_found(net):
    found = resources_pb2.Nodepool(id="np", compute_cluster={"id": "found-cc"})
    net.script("GetNodepool", service_pb2.SingleNodepoolResponse(status=OK, nodepool=found))
    model = make_model(nodepool_id="np")
    [check] = net.sent("GetNodepool")
    assert (check.compute_cluster_id, check.nodepool_id) == ("", "np")
    assert model.runner_selector.nodepool.compute_cluster.id == "found-cc"


CONFLICT = "You can only specify one of deployment_id or compute_cluster_id and nodepool_id."


@pytest.mark.parametrize(
    ("routing", "message"),
    [
        ({"deployment_id": "d", "nodepool_id": "np"}, CONFLICT),
        ({"deployment_id": "d", "compute_cluster_id": "cc", "nodepool_id": "np"}, CONFLICT),
        ({"compute_cluster_id": "cc"}, "compute_cluster_id='cc' needs nodepool_id"),
    ],
)
def test_routing_conflicts(net, routing, message):
    with pytest.raises(errors.UserError) as info:
        make_model(**routing)
    assert str(info.value).startswith(message)
    model = make_model()
    with pytest.raises(errors.UserError) as info:
        model.predict_by_url(URL, "text", **routing)
    assert str(info.value).startswith(message)
    assert net.calls == []


def test_unknown_routing_keyword(net):
    with pytest.raises(errors.UserError, match=r"unexpected argument\(s\) \['deploymentid'\]"):
        make_model().predict_by_url(URL, "text", deploymentid="d")  # type: ignore[call-arg]


def test_missing_deployment_and_nodepool(net):
    gone = status_pb2.Status(code=SC.DEPLOYMENT_DOES_NOT_EXIST, description="no such deployment")
    net.script("GetDeployment", service_pb2.SingleDeploymentResponse(status=gone))
    with pytest.raises(errors.DeploymentNotFound) as info:
        make_model(deployment_id="dep")
    assert str(info.value).startswith("Deployment 'dep' not found for user_id 'bob'; list them")
    gone = status_pb2.Status(code=SC.NODEPOOL_DOES_NOT_EXIST, description="no such nodepool")
    net.script("GetNodepool", service_pb2.SingleNodepoolResponse(status=gone))
    with pytest.raises(errors.NodepoolNotFound, match="in compute cluster 'cc'; list them with"):
        make_model().predict_by_url(URL, "text", compute_cluster_id="cc", nodepool_id="np")
    assert "PostModelOutputs" not in net.names()


# -- inputs: limits, types, files -------------------------------------------------------------


def test_at_most_128_inputs(net):
    net.model = Echo()
    model = make_model()
    assert model.predict([{"text": "x"}] * 128) == ["x"] * 128
    with pytest.raises(errors.UserError, match=r"too many inputs: 129 \(at most 128"):
        model.predict([{"text": "x"}] * 129)
    predictor = model.predictor()
    with pytest.raises(errors.UserError, match="too many inputs"):
        predictor.request([resources_pb2.Input()] * 129)
    calls = [r.inputs[0].data.metadata["_method_name"] for r in net.sent("PostModelOutputs")]
    assert calls == ["_GET_SIGNATURES", "predict"]


@pytest.mark.parametrize(
    ("model_type", "sent"),
    [
        ("text-to-text", {"text": {"url": URL}}),
        ("text-to-image", {"text": {"url": URL}}),
        ("visual-classifier", {"image": {"url": URL}}),
        ("image-to-text", {"image": {"url": URL}}),
        ("audio-to-text", {"audio": {"url": URL}}),
        ("video-to-text", {"video": {"url": URL}}),
    ],
)
def test_input_type_from_the_model_type(net, model_type, sent):
    make_model(model_type_id=model_type).predict_by_url(URL)
    assert net.sent("PostModelOutputs")[0].inputs[0].data == text_data(**sent)


def test_input_type_of_a_model_not_loaded_yet(net):
    loaded = resources_pb2.Model(id="m", app_id="a", model_type_id="visual-detector")
    net.script("GetModel", service_pb2.SingleModelResponse(status=OK, model=loaded))
    make_model(model_type_id="").predict_by_url(URL)
    [get] = net.sent("GetModel")
    assert (get.model_id, get.version_id) == ("m", "v1")
    assert net.sent("PostModelOutputs")[0].inputs[0].data.image.url == URL


@pytest.mark.parametrize("model_type", ["any-to-any", "multimodal-to-text", ""])
def test_input_type_that_cannot_be_inferred(net, model_type):
    model = make_model(model_type_id=model_type)
    model._loaded = True  # nothing more to learn from the server
    with pytest.raises(errors.UserError, match="cannot tell the input type of model 'm'"):
        model.predict_by_url(URL)
    assert "PostModelOutputs" not in net.names()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m.predict_by_url(URL, "pdf"), "input_type 'pdf' is not one of image, text"),
        (lambda m: m.predict_by_bytes(b"\xff", "text"), "text input is not UTF-8"),
        (lambda m: m.predict_by_bytes("str", "text"), "expected non-empty bytes, got str"),
        (lambda m: m.predict_by_bytes(b"", "image"), "expected non-empty bytes"),
        (lambda m: m.predict_by_filepath("/no/such/file"), "Invalid filepath: no file at"),
        (lambda m: m.stream_by_url(URL, "text"), "url_iterator must be an iterable of URLs"),
        (lambda m: m.predict_by_url(URL, "text", {1: 2}), "inference_params must be a dict"),
        (lambda m: m.predict_by_url(URL, "text", None, {"max": 1}), "output_config: "),
    ],
)
def test_input_mistakes(net, call, message):
    with pytest.raises(errors.UserError, match=message):
        call(make_model())
    assert "PostModelOutputs" not in net.names()


# -- statuses and waiting for a deploying model ---------------------------------------------------


def test_deploying_model_is_waited_for(net, clock, caplog):
    net.script(
        "PostModelOutputs",
        response(code=SC.MODEL_DEPLOYING, description="scaling up"),
        response(code=SC.MODEL_LOADING),
        response(code=SC.MODEL_BUSY_PLEASE_RETRY),
        response("done"),
    )
    model = make_model()
    model.retry = Retry(clock=clock.clock, sleep=clock.sleep)
    with caplog.at_level(logging.INFO, logger="orchard.client"):
        answer = model.predict_by_bytes(b"x", "text")
    assert answer.outputs[0].data.text.raw == "done"
    assert len(net.sent("PostModelOutputs")) == 4
    assert clock.sleeps == pytest.approx([0.1 * 1.3**11, 0.1 * 1.3**12, 0.1 * 1.3**13])
    assert caplog.messages[0] == f"{WAITING} (scaling up)"


def test_waiting_ends_at_the_bound(net, clock):
    net.script("PostModelOutputs", response(code=SC.MODEL_DEPLOYING, description="cold"))
    model = make_model(retry_timeout=60)
    model.retry = dataclasses.replace(model.retry, clock=clock.clock, sleep=clock.sleep)
    with pytest.raises(errors.ModelDeploying) as info:
        model.predict_by_bytes(b"x", "text")
    assert str(info.value).startswith("the model is still not ready after 60s (MODEL_DEPLOYING")
    assert "retry_timeout=" in str(info.value)
    assert sum(clock.sleeps) == pytest.approx(60)
    assert max(clock.sleeps) <= 30


@pytest.mark.parametrize(
    ("status", "error", "message"),
    [
        (SC.DEPLOYMENT_DOES_NOT_EXIST, errors.DeploymentNotFound, "no deployment"),
        (SC.DEPLOYMENT_DISABLED, errors.OrchardError, "no deployment"),
        (SC.FAILURE, errors.OrchardError, "no deployment: the output's reason"),
    ],
)
def test_failures_raise_their_error(net, status, error, message):
    failed = response(code=status, description="no deployment")
    if status == SC.FAILURE:
        failed.outputs.add(status={"code": SC.FAILURE, "description": "the output's reason"})
    net.script("PostModelOutputs", failed)
    with pytest.raises(error) as info:
        make_model().predict_by_bytes(b"x", "text")
    assert info.value.code == status
    assert str(info.value) == message
    assert len(net.sent("PostModelOutputs")) == 1


def test_generate_checks_only_its_first_response_for_deploying(net, clock):
    net.script(
        "GenerateModelOutputs",
        [response(code=SC.MODEL_LOADING)],
        [response("a"), response("b")],
        [response("c"), response(code=SC.MODEL_DEPLOYING, description="later")],
    )
    model = make_model()
    model.retry = Retry(clock=clock.clock, sleep=clock.sleep)
    got = [r.outputs[0].data.text.raw for r in model.generate_by_bytes(b"x", "text")]
    assert got == ["a", "b"]
    assert len(net.sent("GenerateModelOutputs")) == 2
    answers = model.generate_by_bytes(b"x", "text")
    assert next(answers).outputs[0].data.text.raw == "c"
    with pytest.raises(errors.ModelDeploying, match="later"):
        next(answers)
    assert len(clock.sleeps) == 1


def test_stream_retry_sends_the_same_requests_again(net, clock):
    net.script(
        "StreamModelOutputs",
        [response(code=SC.MODEL_DEPLOYING)],
        [response("A"), response("B")],
    )
    pulled: list[bytes] = []

    def chunks() -> Iterator[bytes]:
        for chunk in (b"a", b"b"):
            pulled.append(chunk)
            yield chunk

    model = make_model()
    model.retry = Retry(clock=clock.clock, sleep=clock.sleep)
    got = [r.outputs[0].data.text.raw for r in model.stream_by_bytes(chunks(), "text")]
    assert got == ["A", "B"]
    first, second = net.sent("StreamModelOutputs")
    assert first == second and [r.inputs[0].data.text.raw for r in second] == ["a", "b"]
    assert pulled == [b"a", b"b"]  # the caller's iterator is read once


def test_stream_failure_after_the_first_response_is_not_retried(net):
    net.script(
        "StreamModelOutputs",
        [response("A"), response(code=SC.MODEL_BUSY_PLEASE_RETRY, description="queue full")],
    )
    answers = make_model().stream_by_url(iter([URL, URL]), "text")
    assert next(answers).outputs[0].data.text.raw == "A"
    with pytest.raises(errors.ModelBusy, match="queue full"):
        next(answers)
    assert len(net.sent("StreamModelOutputs")) == 1


def test_an_error_making_a_stream_request_reaches_the_caller(net):
    net.script("StreamModelOutputs", [response("A")])
    answers = make_model().stream_by_bytes(iter([b"ok", "not bytes"]), "text")
    with pytest.raises(errors.UserError, match="expected non-empty bytes, got str"):
        list(answers)
    [sent] = net.sent("StreamModelOutputs")
    assert len(sent) == 1


def test_a_stream_without_any_response(net):
    with pytest.raises(errors.OrchardError, match="ended the call without a response"):
        list(make_model().generate_by_bytes(b"x", "text"))


def test_replay_keeps_requests_only_until_settled():
    source = iter(range(5))
    replay = Replay(source)  # type: ignore[arg-type]
    first = replay.attempt()
    assert [next(first), next(first)] == [0, 1]
    second = replay.attempt()
    assert [next(second), next(second), next(second)] == [0, 1, 2]
    assert next(first, "ended") == "ended"  # a superseded attempt takes nothing more
    replay.settle()
    assert list(second) == [3, 4]
    assert replay._kept == []


def test_replay_sends_what_it_kept_while_a_cancelled_attempt_waits_for_the_caller():
    """An interactive caller yields its next request only after an answer; the thread of a
    cancelled attempt that waits for it must not hold up the retried attempt."""
    answered = threading.Event()

    def source() -> Iterator[str]:
        yield "first"
        answered.wait(30)
        yield "second"

    replay = Replay(source())  # type: ignore[arg-type]
    cancelled = replay.attempt()
    assert next(cancelled) == "first"
    waiting = threading.Thread(target=next, args=(cancelled, None))
    waiting.start()
    wait_for(replay._reading.locked, timeout=10, what="the cancelled attempt to read")
    retried = replay.attempt()
    assert next(retried) == "first"
    replay.settle()
    answered.set()
    waiting.join(10)
    assert list(retried) == ["second"]


# -- against a real model: the legacy helpers reach typed methods ----------------------------------


def test_legacy_helpers_reach_a_typed_model(net):
    net.model = Echo()
    model = make_model()
    answer = model.predict_by_bytes(b"hey", "text", inference_params={"times": 2})
    assert answer.outputs[0].data.text.raw == "heyhey"
    chunks = [r.outputs[0].data.text.raw for r in model.generate_by_bytes(b"a b", "text")]
    assert chunks == ["a", "b"]
    upper = {"upper": True}
    streamed = model.stream_by_bytes(iter([b"x", b"y"]), "text", inference_params=upper)
    assert [r.outputs[0].data.text.raw for r in streamed] == ["X", "Y"]
    with pytest.raises(errors.OrchardError, match=r"Echo\.fail raised ValueError: cannot take 'q'"):
        model.predict_by_bytes(b"q", "text", method="fail")
    assert net.sent("PostModelOutputs")[-1].inputs[0].data.metadata["_method_name"] == "fail"


# -- the typed client ------------------------------------------------------------------------------


@pytest.fixture
def echo(net) -> Model:
    """alice's Echo model, version v1, whose signatures the version stores."""
    net.model = Echo()
    version = resources_pb2.ModelVersion(id="v1", method_signatures=signatures(Echo))
    net.script(
        "GetModelVersion", service_pb2.SingleModelVersionResponse(status=OK, model_version=version)
    )
    return make_model(deployment_id="dep")


def parts(request: Any, index: int = 0) -> dict[str, Any]:
    data = request.inputs[index].data
    return {p.id: json_format.MessageToDict(p.data) for p in data.parts}


def test_signatures_from_the_version(echo, net):
    assert echo.available_methods() == ["predict", "generate", "stream", "fail"]
    assert echo.method_signature("predict") == "def predict(text: str, times: int = 1) -> str:"
    assert echo.method_signature("stream") == (
        "def stream(chunks: Iterator[str], upper: bool = False) -> Iterator[str]:"
    )
    [get] = net.sent("GetModelVersion")
    assert (get.user_app_id.user_id, get.model_id, get.version_id) == ("alice", "m", "v1")
    echo.predict(text="x")
    assert net.names().count("GetModelVersion") == 1  # fetched once


def test_unary_method(echo, net):
    assert echo.predict(text="ab", times=2) == "abab"
    assert echo.predict("c") == "c"
    first, _ = net.sent("PostModelOutputs")
    assert parts(first) == {"text": {"stringValue": "ab"}, "times": {"intValue": "2"}}
    assert first.inputs[0].data.metadata["_method_name"] == "predict"
    assert first.runner_selector.deployment.id == "dep"
    value, proto = echo.predict(text="z", with_proto=True)
    assert value == "z" and proto.outputs[0].data.parts[0].id == "return"


def test_unary_batch(echo, net):
    assert echo.predict([{"text": "a"}, {"text": "b", "times": 3}]) == ["a", "bbb"]
    [request] = net.sent("PostModelOutputs")
    assert len(request.inputs) == 2
    assert {inp.data.metadata["_method_name"] for inp in request.inputs} == {"predict"}


def test_generate_method(echo, net):
    assert list(echo.generate(text="one two three")) == ["one", "two", "three"]
    [request] = net.sent("GenerateModelOutputs")
    assert parts(request) == {"text": {"stringValue": "one two three"}}
    assert request.inputs[0].data.metadata["_method_name"] == "generate"
    pairs = list(echo.generate(text="x y", with_proto=True))
    assert [value for value, _ in pairs] == ["x", "y"]


def test_stream_method(echo, net):
    assert list(echo.stream(chunks=iter(["a", "b", "c"]), upper=True)) == ["A", "B", "C"]
    [requests] = net.sent("StreamModelOutputs")
    assert [parts(r) for r in requests] == [
        {"chunks": {"stringValue": "a"}, "upper": {"boolValue": True}},
        {"chunks": {"stringValue": "b"}},
        {"chunks": {"stringValue": "c"}},
    ]
    assert {r.inputs[0].data.metadata["_method_name"] for r in requests} == {"stream"}
    assert all(r.runner_selector.deployment.id == "dep" for r in requests)
    assert list(echo.stream(["q"])) == ["q"]  # a list is an iterable of items too


def test_method_failures(echo, net):
    with pytest.raises(errors.OrchardError, match=r"Echo.fail raised ValueError: cannot take 'x'"):
        echo.fail(text="x")
    with pytest.raises(errors.UserError, match=r"predict\(\): unexpected argument\(s\) \['txt'\]"):
        echo.predict(txt="x")
    with pytest.raises(errors.UserError, match=r"predict\(\): missing required argument 'text'"):
        echo.predict()
    with pytest.raises(errors.UserError, match=r"takes 2 argument\(s\) \(text, times\), got 3"):
        echo.predict("a", 1, 2)
    with pytest.raises(errors.UserError, match="multiple values for"):
        echo.predict("a", text="b")
    with pytest.raises(errors.UserError, match="chunks= is the streaming argument"):
        echo.stream(chunks="abc")  # argument mistakes raise at the call, before iterating
    with pytest.raises(errors.UserError, match=r"stream\(\) needs chunks="):
        echo.stream(upper=True)
    with pytest.raises(errors.UserError, match=r"generate\(\): missing required argument"):
        echo.generate()
    with pytest.raises(AttributeError, match="has no method 'chat'; its methods: predict, gen"):
        echo.chat(text="x")


def test_an_output_failure_raises_with_its_description(echo, net):
    failed = resources_pb2.Output(status={"code": SC.FAILURE, "description": "bad input"})
    net.script("PostModelOutputs", service_pb2.MultiOutputResponse(status=OK, outputs=[failed]))
    with pytest.raises(errors.OrchardError, match=r"^bad input$"):
        echo.predict(text="x")


def test_signatures_asked_of_the_model(net):
    net.model = Echo()
    model = make_model(model_version=None)
    assert model.predict(text="hi") == "hi"
    get, probe, call = (r for n, r in net.calls if n in ("GetModel", "PostModelOutputs"))
    assert get.version_id == ""
    assert probe.inputs[0].data.metadata["_method_name"] == "_GET_SIGNATURES"
    assert call.inputs[0].data.metadata["_method_name"] == "predict"


def test_a_model_without_signatures(net):
    unsupported = response(code=SC.INPUT_UNSUPPORTED_FORMAT, description="old model")
    net.script("PostModelOutputs", unsupported)
    model = make_model()
    assert model.available_methods() == []
    with pytest.raises(AttributeError, match="not a Python model: use predict_by_url"):
        model.predict(text="x")


def test_proto_fields_are_not_methods(echo, net):
    loaded = resources_pb2.Model(id="m", app_id="a", model_type_id="text-to-text")
    net.script("GetModel", service_pb2.SingleModelResponse(status=OK, model=loaded))
    assert echo.model_type_id == "text-to-text"
    assert echo.description == ""
    assert "GetModelVersion" not in net.names()
    with pytest.raises(AttributeError):
        echo._private  # noqa: B018
