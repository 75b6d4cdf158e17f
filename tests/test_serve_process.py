"""`orchard serve` as a real process: bootstrap, graceful shutdown, restart.

Marked e2e: these start the real command in its own process, because signals, the PAT file
and start-up output only exist there."""

from __future__ import annotations

import re
import signal
import stat

import grpc
import pytest

from tests.conftest import Api
from tests.process import ServeProcess
from tests.resources import make_cluster, ok

pytestmark = pytest.mark.e2e


def test_first_start_writes_a_private_pat_and_says_how_to_log_in(tmp_path):
    server = ServeProcess(tmp_path / "home", env={"ORCHARD_BOOTSTRAP_PAT": ""}).start()
    try:
        login = server.wait_for(re.compile(r"Log in with: orchard login (\S+) --pat"), 30)
        assert login.group(1) == server.base_url
        pat_file = tmp_path / "home" / "admin.pat"
        assert stat.S_IMODE(pat_file.stat().st_mode) == 0o600
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            api = Api(channel, pat_file.read_text().strip(), "admin")
            assert ok(api.call("GetUser")).user.id == "admin"
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_graceful_shutdown_and_restart_keeps_state(tmp_path, sig):
    env = {"ORCHARD_BOOTSTRAP_USER": "ops", "ORCHARD_BOOTSTRAP_PAT": "fixed-test-pat"}
    server = ServeProcess(tmp_path / "home", env=env).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            make_cluster(Api(channel, "fixed-test-pat", "ops"), "kept")
    finally:
        assert server.stop(sig) == 0
    assert not (tmp_path / "home" / "ops.pat").exists()  # a given PAT is never written out
    again = ServeProcess(tmp_path / "home", env=env).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{again.port}") as channel:
            api = Api(channel, "fixed-test-pat", "ops")
            # "local" is the cluster the first start made for the bootstrap user
            clusters = ok(api.call("ListComputeClusters")).compute_clusters
            assert sorted(c.id for c in clusters) == ["kept", "local"]
    finally:
        assert again.stop() == 0
