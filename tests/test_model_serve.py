"""`orchard model serve PATH --clean`: the local-runner flow as a user runs it.

Marked e2e: the command runs as its own process (it starts a replica process and stops on
SIGINT), against a live server; predictions go through the official path meanwhile."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from orchard.client.model import Model
from orchard.client.user import User
from tests.resources import EXAMPLES
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e


def test_model_serve_makes_everything_serves_and_cleans_up(server, tmp_path):
    env = {
        **os.environ,
        "ORCHARD_API_BASE": server.base_url,
        "ORCHARD_PAT": server.pat,
        "ORCHARD_USER_ID": server.user_id,
        "ORCHARD_CONFIG": str(tmp_path / "none"),
    }
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchard", "model", "serve", str(EXAMPLES / "echo"), "--clean"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        wait_for(
            lambda: "Serving 'echo' as deployment 'local-echo'" in log.read_text(),
            timeout=120,
            what="model serve to start",
        )
        model = Model(
            url=f"{server.user_id}/examples/models/echo",
            base_url=server.base_url,
            pat=server.pat,
            deployment_id="local-echo",
        )
        # held by the server until the replica has connected
        assert model.predict(text="served locally") == "served locally"
        user = User(user_id=server.user_id, base_url=server.base_url, pat=server.pat)
        cluster = user.compute_cluster("local-runner-compute-cluster")
        assert cluster.cluster_type == "local-dev"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Removed deployment 'local-echo'" in log.read_text()
    assert [d.id for d in user.list_deployments()] == []
    assert [m.id for m in user.app("examples").list_models()] == []
