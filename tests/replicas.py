"""Real runner replicas for end-to-end tests: ``python -m orchard.runners.serve`` processes,
ready when their readiness probe says so, always stopped by the test that started them."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tests.waiting import wait_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Replica:
    def __init__(
        self,
        server,
        runner_id: str,
        package: Path,
        log_dir: Path,
        *,
        python: str = sys.executable,
        nodepool: str = "np",
        cluster: str = "cc",
        concurrency: int = 4,
        replica_id: str = "r",
        address: str = "",
    ) -> None:
        """``address``: where the replica reaches the server (default: its TCP port)."""
        self.health = free_port()
        self.log = log_dir / f"replica-{replica_id}-{self.health}.log"
        self.command = [
            python,
            "-m",
            "orchard.runners.serve",
            "--package",
            str(package),
            "--server",
            address or f"127.0.0.1:{server.port}",
            "--pat",
            server.pat,
            "--runner-id",
            runner_id,
            "--user-id",
            server.user_id,
            "--nodepool-id",
            nodepool,
            "--compute-cluster-id",
            cluster,
            "--replica-id",
            replica_id,
            "--concurrency",
            str(concurrency),
            "--health-port",
            str(self.health),
            "--server-gone-grace",
            "120",
        ]
        self.replica_id = replica_id
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120) -> Replica:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"replica exited ({self.proc.returncode}): {self.output()}")
        try:
            url = f"http://127.0.0.1:{self.health}/healthz/readiness"
            with urllib.request.urlopen(url, timeout=2) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def wait_ready(self, timeout: float = 120) -> None:
        wait_for(self.ready, timeout=timeout, what=f"replica {self.replica_id} to be ready")

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, timeout: float = 60) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
