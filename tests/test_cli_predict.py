"""`orchard model predict` over the recorder of tests/predict_wire.py (no server): what it sends,
what it prints for each call shape, and its one-line errors."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from click.testing import CliRunner, Result

from orchard.authoring import signatures
from orchard.cli.main import cli
from orchard.client import predictions
from tests.predict_wire import OK, SC, Echo, FakeTime, Wire, install, response

MODEL = ("--model_id", "m", "--user_id", "alice", "--app_id", "a")
MODEL_URL = ("--model_url", "https://h/alice/a/models/m/versions/v1")


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("ORCHARD_CONFIG", str(tmp_path / "config"))
    monkeypatch.setenv("ORCHARD_PAT", "p")
    monkeypatch.setenv("ORCHARD_API_BASE", "127.0.0.1:1")
    for name in ("ORCHARD_USER_ID", "CLARIFAI_USER_ID", "CLARIFAI_PAT", "CLARIFAI_API_BASE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def net(monkeypatch: pytest.MonkeyPatch) -> Wire:
    recorder = install(monkeypatch)
    recorder.script(
        "GetModel",
        service_pb2.SingleModelResponse(
            status=OK, model={"id": "m", "app_id": "a", "model_type_id": "text-to-text"}
        ),
    )
    version = resources_pb2.ModelVersion(id="v1", method_signatures=signatures(Echo))
    recorder.script(
        "GetModelVersion", service_pb2.SingleModelVersionResponse(status=OK, model_version=version)
    )
    recorder.model = Echo()
    return recorder


def orchard(*args: str) -> Result:
    return CliRunner().invoke(cli, ["model", "predict", *args])


def failed(result: Result) -> str:
    lines = result.stderr.splitlines()
    assert result.exit_code == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


def test_predict_text_in_a_deployment(net):
    result = orchard(*MODEL, "--bytes", "hello", "--input_type", "text", "--deployment_id", "dep")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "hello\n"
    [request] = net.sent("PostModelOutputs")
    assert request.runner_selector.deployment.id == "dep"
    assert request.runner_selector.deployment.user_id == "bob"
    assert request.inputs[0].data.text.raw == "hello"
    assert not request.inputs[0].data.HasField("metadata")  # the server picks `predict`


def test_predict_with_params_in_a_nodepool_and_input_type_from_the_model(net):
    result = orchard(
        *MODEL_URL,
        "-b",
        "ab",
        "-cc_id",
        "cc",
        "-np_id",
        "np",
        "-dpl_usr_id",
        "org",
        "--inference_params",
        '{"times": 3}',
        "--output_config",
        '{"max_concepts": 2}',
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "ababab\n"
    [request] = net.sent("PostModelOutputs")
    nodepool = request.runner_selector.nodepool
    assert (nodepool.id, nodepool.compute_cluster.id, nodepool.compute_cluster.user_id) == (
        "np",
        "cc",
        "org",
    )
    assert request.model.model_version.output_info.output_config.max_concepts == 2
    assert "GetUser" not in net.names()


def test_generate_prints_chunks_as_they_arrive(net):
    result = orchard(*MODEL, "--bytes", "a b c", "-i", "text", "--method", "generate")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "abc\n"
    assert len(net.sent("GenerateModelOutputs")) == 1


def test_stream_from_a_file(net, tmp_path):
    (tmp_path / "in.txt").write_text("xy")
    args = ("--file_path", str(tmp_path / "in.txt"), "--method", "stream")
    result = orchard(*MODEL, *args, "--inference_params", '{"upper": true}')
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "XY\n"
    [requests] = net.sent("StreamModelOutputs")
    assert [r.inputs[0].data.text.raw for r in requests] == ["xy"]


def test_json_output(net):
    result = orchard(*MODEL, "--bytes", "a b", "--method", "generate", "--output", "json")
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["text"]["raw"] for line in lines] == ["a", "b"]


def test_non_text_output_is_json(net):
    concept = resources_pb2.Output(status=OK, data={"concepts": [{"id": "cat", "value": 0.9}]})
    net.script("PostModelOutputs", service_pb2.MultiOutputResponse(status=OK, outputs=[concept]))
    result = orchard(*MODEL, "--url", "https://x/cat.jpg", "-i", "image")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"concepts": [{"id": "cat", "value": 0.9}]}
    assert net.sent("PostModelOutputs")[0].inputs[0].data.image.url == "https://x/cat.jpg"


def test_a_method_by_name_uses_its_signature(net):
    result = orchard(*MODEL_URL, "--bytes", "q", "--method", "fail")
    assert failed(result) == "Error: Echo.fail raised ValueError: cannot take 'q'"
    [request] = net.sent("PostModelOutputs")
    assert request.inputs[0].data.metadata["_method_name"] == "fail"
    assert "has no method 'chat'; its methods: predict, generate, stream, fail" in failed(
        orchard(*MODEL_URL, "--bytes", "q", "--method", "chat")
    )


def test_waiting_for_a_deploying_model_is_shown(net, monkeypatch):
    clock = FakeTime()
    fake = functools.partial(predictions.Retry, clock=clock.clock, sleep=clock.sleep)
    monkeypatch.setattr(predictions, "Retry", fake)
    net.script("PostModelOutputs", response(code=SC.MODEL_DEPLOYING), response("ready"))
    result = orchard(*MODEL, "--bytes", "x", "-i", "text")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "ready\n"
    assert result.stderr.startswith(predictions.WAITING)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((*MODEL, "--url", "u", "--bytes", "b"), "give exactly one input: --url, --bytes or"),
        (MODEL, "give exactly one input"),
        (("--bytes", "b"), "name the model: --model_url URL, or --model_id and --app_id"),
        ((*MODEL_URL, *MODEL[:2], "-b", "x"), "You can only specify one of url or model_id"),
        ((*MODEL, "-b", "x", "--deployment_id", "d", "-np_id", "np"), "You can only specify one"),
        ((*MODEL, "-b", "x", "--inference_params", "{nope"), "--inference_params is not JSON"),
        ((*MODEL, "-b", "x", "--inference_params", "[1]"), "must be a JSON object"),
        ((*MODEL, "-b", "x", "-i", "pdf"), "Invalid value for '-i' / '--input_type'"),
        (("--model_url", "nope", "-b", "x"), "'nope' is not a model URL"),
    ],
)
def test_mistakes_are_one_line(net, args, message):
    assert message in failed(orchard(*args))
    assert "PostModelOutputs" not in net.names()


def test_failed_prediction_is_one_line(net):
    net.script("PostModelOutputs", response(code=SC.MODEL_NOT_DEPLOYED, description="no runner"))
    assert failed(orchard(*MODEL, "-b", "x", "-i", "text")) == "Error: no runner"
