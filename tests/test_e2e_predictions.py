"""Predictions end to end: real runner processes in built environments, the real server,
Orchard's SDK, CLI and the official SDK.

Marked e2e: each test starts runner processes (``python -m orchard.runners.serve``) because
what is checked lives across processes: environments built with uv, a replica killed with
SIGKILL, a server restarted under running replicas."""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from clarifai_grpc.grpc.api import resources_pb2 as r
from click.testing import CliRunner

from orchard.cli.main import cli
from orchard.client.model import Model
from orchard.testing import ServerThread
from tests.conftest import Api
from tests.replicas import Replica, free_port
from tests.resources import deploy, make_cluster, make_nodepool, ok
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "models"


def model_for(server, **routing) -> Model:
    return Model(
        url=f"{server.user_id}/examples/models/echo",
        base_url=server.base_url,
        pat=server.pat,
        **routing,
    )


def test_the_nine_methods_through_the_orchard_sdk(server, echo, tmp_path, file_server):
    model = model_for(server, deployment_id="echo-dep")
    assert model.predict_by_bytes(b"hello", input_type="text").outputs[0].data.text.raw == ("hello")
    text_file = tmp_path / "in.txt"
    text_file.write_text("from a file")
    assert (
        model.predict_by_filepath(str(text_file), input_type="text").outputs[0].data.text.raw
        == "from a file"
    )
    url = file_server("greeting.txt", b"from a url")
    assert model.predict_by_url(url, input_type="text").outputs[0].data.text.raw == ("from a url")
    words = [
        resp.outputs[0].data.text.raw
        for resp in model.generate_by_bytes(b"a b c", input_type="text", method="generate")
    ]
    assert words == ["a ", "b ", "c"]
    assert [
        x.outputs[0].data.text.raw
        for x in model.generate_by_filepath(str(text_file), input_type="text", method="generate")
    ] == ["from ", "a ", "file"]
    assert [
        x.outputs[0].data.text.raw
        for x in model.generate_by_url(url, input_type="text", method="generate")
    ] == ["from ", "a ", "url"]
    echoed = [
        resp.outputs[0].data.text.raw
        for resp in model.stream_by_bytes(
            iter([b"one", b"two"]), input_type="text", method="stream"
        )
    ]
    assert echoed == ["one", "two"]
    assert [
        x.outputs[0].data.text.raw
        for x in model.stream_by_url(iter([url]), input_type="text", method="stream")
    ] == ["from a url"]
    assert [
        x.outputs[0].data.text.raw
        for x in model.stream_by_filepath(str(text_file), input_type="text", method="stream")
    ] == ["from a file"]
    # the seed's older form: routing per call
    plain = Model(
        url=f"{server.user_id}/examples/models/echo", base_url=server.base_url, pat=server.pat
    )
    response = plain.predict_by_bytes(
        b"per call", input_type="text", deployment_id="echo-dep", user_id=server.user_id
    )
    assert response.outputs[0].data.text.raw == "per call"


def test_the_typed_client(server, echo):
    model = model_for(server, deployment_id="echo-dep")
    assert model.predict(text="typed") == "typed"
    assert list(model.generate(text="x y")) == ["x ", "y"]
    assert list(model.stream(input_iterator=iter(["p", "q"]))) == ["p", "q"]
    assert set(model.available_methods()) >= {"predict", "generate", "stream"}


def test_the_cli_predict(server, echo, tmp_path):
    env = {
        "ORCHARD_API_BASE": server.base_url,
        "ORCHARD_PAT": server.pat,
        "ORCHARD_USER_ID": server.user_id,
        "ORCHARD_CONFIG": str(tmp_path / "none"),
    }
    url = f"https://host/{server.user_id}/examples/models/echo"
    done = CliRunner().invoke(
        cli,
        [
            "model",
            "predict",
            "--model_url",
            url,
            "--bytes",
            "hi",
            "--input_type",
            "text",
            "--deployment_id",
            "echo-dep",
        ],
        env=env,
    )
    assert done.exit_code == 0, done.output
    assert done.stdout.strip() == "hi"


def test_cancellation_reaches_the_runner(server, api, pool, tmp_path):
    runner_id, package, python = deploy(server, api, "token-streamer", "tokens")
    replica = Replica(server, runner_id, package, tmp_path, python=str(python)).start()
    try:
        model = Model(
            url=f"{server.user_id}/examples/models/token-streamer",
            base_url=server.base_url,
            pat=server.pat,
            deployment_id="tokens",
        )
        stream = model.generate_by_bytes(
            b"tell me",
            input_type="text",
            method="generate",
            inference_params={"delay_ms": 100, "max_tokens": 500},
        )
        first = next(iter(stream))
        assert first.outputs[0].data.text.raw
        stream.close()  # the client goes away after one token
        wait_for(
            lambda: "generate generate cancelled" in replica.output(),
            timeout=60,
            what="the runner to log the cancelled item",
        )
    finally:
        assert replica.stop() == 0, replica.output()


SLOW = """\
import os
import time

from orchard.authoring import ModelClass


class Slow(ModelClass):
    @ModelClass.method
    def predict(self, text: str) -> str:
        gates = os.environ["ORCHARD_TEST_GATES"]
        open(os.path.join(gates, f"started-{os.getpid()}"), "w").close()
        deadline = time.monotonic() + 120
        while not os.path.exists(os.path.join(gates, "open")):
            if time.monotonic() > deadline:
                raise TimeoutError("the test never opened the gate")
            time.sleep(0.02)
        return f"{text} from {os.getpid()}"
"""


def test_a_runner_killed_mid_request_has_its_unary_call_retried(
    server, api, pool, tmp_path, monkeypatch
):
    package = tmp_path / "slow"
    (package / "1").mkdir(parents=True)
    (package / "config.yaml").write_text("model: {id: slow, app_id: examples}\n")
    (package / "requirements.txt").write_text("")
    (package / "1" / "model.py").write_text(SLOW)
    gates = tmp_path / "gates"
    gates.mkdir()
    monkeypatch.setenv("ORCHARD_TEST_GATES", str(gates))
    ok(api.call("PostApps", apps=[r.App(id="examples")]))
    uid = r.UserAppIDSet(user_id=server.user_id, app_id="examples")
    ok(api.call("PostModels", user_app_id=uid, models=[r.Model(id="slow")]))
    version = ok(
        api.call(
            "PostModelVersions", user_app_id=uid, model_id="slow", model_versions=[r.ModelVersion()]
        )
    ).model.model_version.id
    worker = r.Worker(
        model=r.Model(id="slow", app_id="examples", model_version=r.ModelVersion(id=version))
    )
    ok(
        api.call(
            "PostDeployments",
            deployments=[
                r.Deployment(
                    id="slow-dep",
                    worker=worker,
                    scheduling_choice=4,
                    nodepools=[r.Nodepool(id="np", compute_cluster=r.ComputeCluster(id="cc"))],
                )
            ],
        )
    )
    runner_id = (
        ok(
            api.call(
                "PostRunners",
                compute_cluster_id="cc",
                nodepool_id="np",
                runners=[r.Runner(worker=worker)],
            )
        )
        .runners[0]
        .id
    )
    first = Replica(server, runner_id, package, tmp_path, replica_id="a").start()
    second = Replica(server, runner_id, package, tmp_path, replica_id="b").start()
    try:
        model = Model(
            url=f"{server.user_id}/examples/models/slow",
            base_url=server.base_url,
            pat=server.pat,
            deployment_id="slow-dep",
        )
        with ThreadPoolExecutor(1) as caller:
            answer = caller.submit(model.predict_by_bytes, b"hi", input_type="text")
            started = wait_for(
                lambda: list(gates.glob("started-*")),
                timeout=60,
                what="the call to reach a replica",
            )
            victim = int(started[0].name.split("-")[1])
            os.kill(victim, signal.SIGKILL)
            wait_for(
                lambda: len(list(gates.glob("started-*"))) == 2,
                timeout=60,
                what="the call to be retried on the other replica",
            )
            (gates / "open").touch()
            text = answer.result(timeout=60).outputs[0].data.text.raw
        assert text.startswith("hi from ") and str(victim) not in text
    finally:
        (gates / "open").touch()
        first.kill()
        second.stop()


@pytest.mark.parametrize("transport", ["grpc", "link"])
def test_runners_reconnect_by_themselves_after_a_server_restart(
    tmp_path, pool_for_restart, transport
):
    server, runner_id, package, python = pool_for_restart
    address = server.server.local_address if transport == "link" else ""
    assert transport == "grpc" or address.startswith("link:")
    replica = Replica(server, runner_id, package, tmp_path, python=str(python), address=address)
    replica.start()
    try:
        model = model_for(server, deployment_id="echo-dep")
        assert model.predict_by_bytes(b"before", input_type="text").outputs[0].data.text.raw
        port, pat = server.port, server.pat
        server.stop()
        again = ServerThread(server.settings.home, offline=True)
        again.pat = pat
        again.settings.bootstrap_pat = pat
        again.settings.port = port
        again.start()
        try:
            model = model_for(again, deployment_id="echo-dep")
            # held by the dispatcher until the replica has reconnected, then served
            assert (
                model.predict_by_bytes(b"after", input_type="text").outputs[0].data.text.raw
                == "after"
            )
        finally:
            assert replica.stop() == 0, replica.output()
            again.stop()
    finally:
        replica.kill()


@pytest.fixture
def pool_for_restart(tmp_path):
    """A server on a fixed port (so a restart keeps it) with echo deployed."""
    server = ServerThread(tmp_path / "home", offline=True)
    server.settings.port = free_port()
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        api = Api(channel, server.pat, server.user_id)
        make_cluster(api)
        make_nodepool(api)
        runner_id, package, python = deploy(server, api, "echo", "echo-dep")
    yield server, runner_id, package, python
    if server.server is not None:
        server.stop()
