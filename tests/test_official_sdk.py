"""The external conformance test: the official `clarifai` SDK and CLI (12.5.0), which nobody
here wrote, against a live Orchard server.

Marked e2e: the official package is installed into its own virtual environment (cached under
.cache/ between runs) and runs in its own processes, with a scrubbed environment and a
temporary HOME so nothing reads or writes a real user's config.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml
from clarifai_grpc.grpc.api import resources_pb2 as r

from orchard.client.uploads import upload_model
from orchard.testing import ServerThread
from tests.conftest import CLARIFAI, Api, official_upload
from tests.replicas import Replica
from tests.resources import (
    EXAMPLES,
    LIGHT_EXAMPLES,
    SUCCESS,
    deploy,
    deployment,
    make_cluster,
    make_nodepool,
    ok,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent / "official_sdk"


def _env(tmp_path: Path, server, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "CLARIFAI_API_BASE": server.base_url,
        "CLARIFAI_PAT": server.pat,
        "CLARIFAI_USER_ID": server.user_id,
        **extra,
    }


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)


def test_official_sdk_crud(official_python, server, tmp_path):
    done = _run(
        [str(official_python), str(HERE / "scenario.py")],
        _env(tmp_path, server, CONFIG_DIR=str(HERE)),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok: everything deleted" in done.stdout


def test_official_cli(official_python, server, tmp_path):
    config = tmp_path / "clarifai.yaml"
    config.write_text(
        "current_context: orchard\ncontexts:\n  orchard:\n"
        f"    CLARIFAI_API_BASE: {server.base_url}\n    CLARIFAI_PAT: {server.pat}\n"
        f"    CLARIFAI_USER_ID: {server.user_id}\n"
    )
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    cli = [str(official_python.with_name("clarifai")), "--config", str(config)]
    nodepool_yaml = tmp_path / "nodepool.yaml"
    nodepool_yaml.write_text((HERE / "nodepool.yaml").read_text().replace("official-cc", "cli-cc"))
    steps = [
        ["computecluster", "create", "cli-cc", "--config", str(HERE / "compute_cluster.yaml")],
        ["computecluster", "list"],
        ["nodepool", "create", "cli-cc", "cli-np", "--config", str(nodepool_yaml)],
        ["nodepool", "list", "cli-cc"],
        ["nodepool", "delete", "cli-cc", "cli-np"],
        ["computecluster", "delete", "cli-cc"],
    ]
    outputs = []
    for args in steps:
        done = _run(cli + args, env)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        outputs.append(done.stdout)
    assert "cli-cc" in outputs[1] and "cli-np" in outputs[3]


@pytest.mark.parametrize("example", LIGHT_EXAMPLES, ids=lambda p: p.name)
def test_official_model_upload_builds_the_example(official_python, server, api, tmp_path, example):
    """`clarifai model upload` (12.5.0) of each example ends in MODEL_TRAINED on Orchard."""
    from clarifai_grpc.grpc.api import resources_pb2 as r
    from clarifai_grpc.grpc.api.status import status_code_pb2 as sc

    package = tmp_path / example.name
    shutil.copytree(example, package)  # the official uploader writes a Dockerfile into it
    # The official uploader requires its own package in requirements.txt (and the model then
    # runs under its ModelClass, which model.py imports first when it is installed).
    with (package / "requirements.txt").open("a") as requirements:
        requirements.write(f"\nclarifai=={CLARIFAI}\n")
    official_upload(official_python, server, package, tmp_path)
    model_id = yaml.safe_load((example / "config.yaml").read_text())["model"]["id"]
    uid = r.UserAppIDSet(user_id=server.user_id, app_id="examples")
    versions = api.call("ListModelVersions", user_app_id=uid, model_id=model_id).model_versions
    assert versions and versions[0].status.code == sc.MODEL_TRAINED, versions[:1]


def test_official_sdk_predictions(official_python, server, api, echo, file_server, tmp_path):
    """The nine *_by_* methods, the typed client and a token stream, from the official SDK."""
    runner_id, package, python = deploy(server, api, "token-streamer", "tokens")
    tokens = Replica(
        server, runner_id, package, tmp_path, python=str(python), replica_id="tokens"
    ).start()
    text_file = tmp_path / "in.txt"
    text_file.write_text("a file")
    try:
        done = _run(
            [str(official_python), str(HERE / "predict_scenario.py")],
            _env(
                tmp_path,
                server,
                TEXT_URL=file_server("t.txt", b"from a url"),
                TEXT_FILE=str(text_file),
            ),
        )
        assert done.returncode == 0, done.stdout + done.stderr[-4000:]
        assert "ok: token streamer generate and predict" in done.stdout
    finally:
        assert tokens.stop() == 0, tokens.output()


def _cli_config(tmp_path: Path, server) -> Path:
    config = tmp_path / "clarifai.yaml"
    config.write_text(
        "current_context: orchard\ncontexts:\n  orchard:\n"
        f"    CLARIFAI_API_BASE: {server.base_url}\n    CLARIFAI_PAT: {server.pat}\n"
        f"    CLARIFAI_USER_ID: {server.user_id}\n"
    )
    return config


def test_official_local_runner_serves_all_three_shapes(official_python, server, api, tmp_path):
    """`clarifai model serve --clean` (the official local runner, 12.5.0) registers with
    Orchard, serves predict, generate and stream to the official typed client, hears a cancel
    on its control call, and removes what it made when stopped."""
    package = tmp_path / "served"
    shutil.copytree(HERE / "served", package)
    gate = tmp_path / "gate"
    cli = [
        str(official_python.with_name("clarifai")),
        "--config",
        str(_cli_config(tmp_path, server)),
    ]
    env = {**_env(tmp_path, server), "SERVED_GATE": str(gate)}
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        serve = subprocess.Popen(
            [*cli, "model", "serve", str(package), "--clean"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        wait_for(
            lambda: api.call("GetDeployment", deployment_id="local-served").status.code == SUCCESS,
            timeout=120,
            what=f"the local runner to make its deployment: {log.read_text()[-2000:]}",
        )
        listed = _run([*cli, "model", "list", server.user_id, "--app_id", "official-runner"], env)
        assert listed.returncode == 0 and "served" in listed.stdout, listed.stdout + listed.stderr
        done = _run([str(official_python), str(HERE / "local_runner_scenario.py")], env)
        assert done.returncode == 0, done.stdout + done.stderr[-4000:] + log.read_text()[-4000:]
        assert "ok: held generate closed" in done.stdout
        wait_for(
            lambda: "Cancellation received on control connection" in log.read_text(),
            timeout=60,
            what="the cancel to reach the runner's control call",
        )
        gate.write_text("")
        serve.send_signal(signal.SIGINT)
        serve.wait(timeout=120)
    finally:
        gate.write_text("")
        if serve.poll() is None:
            serve.kill()
            serve.wait()
    output = log.read_text()
    serving = output.split("── Stopping")[0]  # (once its runner is deleted, it is refused)
    assert "Runner got work that didn't have a SUCCESS" not in serving, serving[-4000:]
    assert "Control connection stream ended" not in serving, serving[-4000:]  # it stayed open
    # The runner's own threads may log between a step and its "done" (once its runner record
    # is deleted, the server refuses its work stream): each step must end "done" before the next.
    pattern = r"Deleting (deployment|runner|model version|model)\.\.\. (.*?)(?=Deleting |$)"
    said = dict(re.findall(pattern, output, re.S))
    assert set(said) == {"deployment", "runner", "model version", "model"}, output[-4000:]
    assert all("done" in after for after in said.values()), output[-4000:]
    uid = r.UserAppIDSet(user_id=server.user_id, app_id="official-runner")
    assert ok(api.call("ListModels", user_app_id=uid)).models == []
    assert ok(api.call("ListRunners")).runners == []


@pytest.fixture
def orchestrating(tmp_path: Path) -> Iterator[ServerThread]:
    """A server that starts the replicas of its deployments itself (and so keeps their logs)."""
    with ServerThread(tmp_path / "home", offline=True, orchestrate=True, drain_seconds=5.0) as on:
        yield on


def test_official_cli_deployment_and_model_logs(official_python, orchestrating, tmp_path):
    """`clarifai deployment logs` and `clarifai model logs --deployment` print what an
    orchestrated replica printed and what the orchestrator did with it."""
    server = orchestrating
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    api = Api(channel, server.pat, server.user_id)
    try:
        make_cluster(api)
        make_nodepool(api, max_instances=1)
        version = upload_model(
            EXAMPLES / "echo", user_id=server.user_id, base_url=server.base_url, pat=server.pat
        )
        echo = r.Model(id="echo", app_id="examples", model_version=r.ModelVersion(id=version.id))
        dep = deployment("echo-dep", nodepools=[{"id": "np", "compute_cluster": {"id": "cc"}}])
        dep.worker.model.CopyFrom(echo)
        dep.autoscale_config.min_replicas = 1
        ok(api.call("PostDeployments", deployments=[dep]))
        cli = [
            str(official_python.with_name("clarifai")),
            "--config",
            str(_cli_config(tmp_path, server)),
        ]
        env = _env(tmp_path, server)

        def printed(*args: str) -> str:
            done = _run([*cli, *args, "--no-follow"], env)
            assert done.returncode == 0, done.stdout + done.stderr
            return done.stdout

        wait_for(
            lambda: "serving" in printed("deployment", "logs", "echo-dep"),
            timeout=120,
            what="the replica's output in `clarifai deployment logs`",
        )
        events = printed("deployment", "logs", "echo-dep", "--log-type", "events")
        assert "starting replica echo-dep-" in events, events
        assert "serving" in printed("model", "logs", "--deployment", "echo-dep")
        ok(api.call("DeleteDeployments", ids=["echo-dep"]))
    finally:
        channel.close()
