"""The ``ray`` provider's line to a Ray cluster: its settings, and the driver process
(:mod:`~orchard.providers.ray_driver`) kept running for it.

A connected driver that stops answering for ``SILENCE`` seconds, or a driver that exits,
makes the cluster unreachable (``problem`` says why, with the driver's last error); an exited
one is started again with backoff (1, 2, 4 ... 30 s). Connecting has no such bound here: Ray's
own connection timeout ends a driver that cannot connect.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

SILENCE = 10.0  # a driver quiet this long means its cluster is unreachable
MAX_BACKOFF = 30.0
Event = dict[str, Any]


@dataclass(frozen=True)
class RayClusterConfig:
    """A Ray cluster this server may run replicas on; users name it as a compute cluster's
    ``region``."""

    name: str
    address: str  # ray://HEAD:10001 (Ray Client), or HEAD:6379 from a machine that is a node
    auth_token_file: Path | None = None  # the cluster's token, when it uses RAY_AUTH_MODE=token
    namespace: str = "orchard"  # the Ray namespace of this server's actors (one per server)


class Link(Protocol):
    """The provider's line to one cluster's driver."""

    problem: str  # why the cluster cannot be used now ("" when it can)

    def start(self) -> None: ...

    def send(self, command: Event) -> None: ...

    def close(self, grace: float) -> None: ...


class DriverLink:
    """A driver process for one cluster, kept running: started again with backoff when it
    exits, and reported unreachable while it is gone or silent. Events go to ``on_event``
    (from the link's own thread), with two of the link's own: ``spawned`` (a new driver waits
    for its first commands) and ``down`` (``reason``)."""

    def __init__(
        self, config: RayClusterConfig, logs: Path, on_event: Callable[[Event], None]
    ) -> None:
        self.config, self.on_event = config, on_event
        self.log_path = logs / f"ray-{config.name}.log"
        self.problem = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._write = threading.Lock()
        self._closing = threading.Event()
        self._heard = time.monotonic()
        self._connected = False  # the current driver said hello
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._keep_running, daemon=True, name=f"ray-{self.config.name}"
            )
            self._thread.start()
            threading.Thread(target=self._watch_silence, daemon=True).start()

    def send(self, command: Event) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            return
        with self._write, contextlib.suppress(OSError, ValueError):
            proc.stdin.write(json.dumps(command).encode() + b"\n")
            proc.stdin.flush()

    def close(self, grace: float) -> None:
        """Tell the driver to stop its replicas (up to ``grace``) and end; kill it after."""
        self._closing.set()
        proc = self._proc
        if proc is None:
            return
        self.send({"op": "exit", "grace": grace})
        with contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()
        try:
            proc.wait(timeout=grace + 20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "orchard.providers.ray_driver",
            "--address",
            self.config.address,
            "--namespace",
            self.config.namespace,
        ]

    def _env(self) -> dict[str, str]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if self.config.auth_token_file is not None:
            env["RAY_AUTH_MODE"] = "token"
            env["RAY_AUTH_TOKEN_PATH"] = str(self.config.auth_token_file)
        return env

    def _keep_running(self) -> None:
        failures = 0
        while not self._closing.is_set():
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "ab") as err:
                self._proc = subprocess.Popen(
                    self._command(),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    env=self._env(),
                    start_new_session=True,
                )
            self._heard, self._connected = time.monotonic(), False
            self.on_event({"event": "spawned"})
            hello = self._read(self._proc)
            code = self._proc.wait()
            if self._closing.is_set():
                break
            failures = 0 if hello else failures + 1
            delay = min(MAX_BACKOFF, 2.0 ** max(0, failures - 1))
            self.problem = (
                f"the Ray cluster {self.config.name!r} at {self.config.address} is not "
                f"reachable (its driver exited with code {code}; next try in {delay:g} s): "
                f"{self._last_error()}"
            )
            self.on_event({"event": "down", "reason": self.problem})
            log.warning("%s", self.problem)
            self._closing.wait(delay)

    def _read(self, proc: subprocess.Popen[bytes]) -> bool:
        """Events until the driver's output ends; whether it ever connected."""
        assert proc.stdout is not None
        hello = False
        for raw in proc.stdout:
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            self._heard = time.monotonic()
            if event.get("event") == "hello":
                hello = self._connected = True
            if event.get("event") in ("hello", "nodes"):
                self.problem = ""
            self.on_event(event)
        return hello

    def _watch_silence(self) -> None:
        while not self._closing.wait(1.0):
            quiet = time.monotonic() - self._heard
            proc = self._proc
            running = proc is not None and proc.poll() is None
            if running and self._connected and quiet > SILENCE:
                if not self.problem:
                    log.warning("the Ray cluster %r stopped answering", self.config.name)
                self.problem = (
                    f"the Ray cluster {self.config.name!r} at {self.config.address} is not "
                    f"reachable: no answer for {quiet:.0f} s"
                )

    def _last_error(self) -> str:
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - 8192))
                lines = handle.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return "no output"
        useful = [line.strip() for line in lines if line.strip()]
        errors_only = [line for line in useful if "Error" in line or "error" in line]
        return (errors_only or useful or ["no output"])[-1][:500]
