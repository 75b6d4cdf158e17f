"""The ``ray`` provider's node side without Ray: a :class:`ReplicaActor` is plain Python, so its
work on a node (unpack, build the environment once, run the runner, drain it) is checked here
with a stand-in for uv and for the runner's interpreter."""

from __future__ import annotations

import io
import sys
import tarfile
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from orchard.providers.ray_replica import ReplicaActor
from tests.waiting import wait_for

# Stands in for uv's two steps: "create" makes an environment whose python is a shell script
# that prints its arguments, the token it read on stdin, the worker's secret if it got it, and
# its HOME, then sleeps (a "runner" that drains on SIGTERM); every call is counted in the file
# named by the last argument.
FAKE_BUILD = textwrap.dedent(
    """
    import os, sys
    step, env, count = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(count, "a") as out:
        out.write(step + "\\n")
    if step == "create":
        os.makedirs(env + "/bin")
        os.makedirs(env + "/lib/python3.11/site-packages")
        with open(env + "/bin/python", "w") as script:
            script.write(
                "#!/bin/sh\\n"
                "trap 'echo drained; exit 0' TERM\\n"
                "read pat\\n"
                "echo runner \\"$@\\" pat=$pat secret=$WORKER_SECRET home=$HOME\\n"
                "[ -n \\"$ORCHARD_TEST_EXIT\\" ] && exit $ORCHARD_TEST_EXIT\\n"
                "sleep 30 & wait\\n"
            )
        os.chmod(env + "/bin/python", 0o755)
    print("built", step)
    """
)


def tar_gz(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


PACKAGE = tar_gz({"config.yaml": "model: {id: m}\n", "requirements.txt": "", "1/model.py": ""})
RUNTIME = tar_gz({"orchard/__init__.py": ""})


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ORCHARD_RAY_CACHE", str(tmp_path / "cache"))
    builder = tmp_path / "fake_build.py"
    builder.write_text(FAKE_BUILD)
    return tmp_path


def spec(node: Path, replica_id: str, **more: Any) -> dict[str, Any]:
    build = [sys.executable, str(node / "fake_build.py")]
    count = str(node / "steps")
    return {
        "id": replica_id,
        "server": "127.0.0.1:7600",
        "args": ["--runner-id", "r1"],
        "token": "secret-token",
        "package_digest": "d1",
        "runtime_version": "v1",
        "env_key": "k1",
        "python_version": "3.11",
        "commands": [[*build, "create", "{env}", count], [*build, "install", "{env}", count]],
        **more,
    }


def output(actor: ReplicaActor) -> str:
    text, _ = actor.read(0)
    return text


def test_a_replica_unpacks_builds_once_and_runs_the_runner(
    node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKER_SECRET", "of the Ray worker")
    first = ReplicaActor(spec(node, "r-1", declared=[["ORCHARD_TEST_EXIT", "7"]]))
    assert first.run(PACKAGE, RUNTIME) == {"code": 7, "reason": ""}
    assert first.run(None, None) == {"code": 7, "reason": ""}  # later calls wait for the end
    text = output(first)
    assert "building environment k1 on this Ray node" in text and "built install" in text
    cache = node / "cache"
    assert f"--package {cache / 'packages' / 'd1'} --server 127.0.0.1:7600 --runner-id r1" in text
    # the token came on stdin; the worker's environment stayed behind; a private home, gone after
    assert f"pat=secret-token secret= home={cache / 'homes' / 'r-1' / 'home'}" in text
    assert not (cache / "homes" / "r-1").exists()
    assert (cache / "packages" / "d1" / "1" / "model.py").exists()
    pth = cache / "envs" / "k1" / "lib" / "python3.11" / "site-packages" / "_orchard_runtime.pth"
    assert pth.read_text().strip() == str(cache / "runtime" / "v1")
    second = ReplicaActor(spec(node, "r-2", declared=[["ORCHARD_TEST_EXIT", "7"]]))
    assert second.run(PACKAGE, RUNTIME)["code"] == 7
    assert (node / "steps").read_text().split() == ["create", "install"]  # built once
    assert "building environment" not in output(second)


def test_stop_drains_the_runner(node: Path) -> None:
    actor = ReplicaActor(spec(node, "r-1"))
    ended: list[dict[str, Any]] = []
    runner = threading.Thread(target=lambda: ended.append(actor.run(PACKAGE, RUNTIME)))
    runner.start()
    wait_for(lambda: "pat=secret-token" in output(actor), timeout=30, what="the runner")
    actor.stop(5.0)
    actor.stop(5.0)  # idempotent
    runner.join(timeout=30)
    assert ended == [{"code": 0, "reason": ""}] and "drained" in output(actor)


def test_a_replica_stopped_before_its_runner_starts_never_starts_it(node: Path) -> None:
    actor = ReplicaActor(spec(node, "r-1"))
    actor.stop(5.0)
    assert actor.run(PACKAGE, RUNTIME) == {
        "code": 0,
        "reason": "it was stopped before its runner started",
    }


def test_a_failed_build_ends_the_replica_with_the_reason(node: Path) -> None:
    broken = spec(node, "r-1", commands=[[sys.executable, "-c", "raise SystemExit(3)"]])
    result = ReplicaActor(broken).run(PACKAGE, RUNTIME)
    assert result["code"] is None
    assert "failed with exit code 3 while building" in result["reason"]
