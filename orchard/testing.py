"""A testing kit: a real Orchard server in a background thread, for tests and notebooks.

    with ServerThread(tmp_path) as server:
        User(user_id=server.user_id, base_url=server.base_url, pat=server.pat)...

The server is the real one (gRPC on loopback, SQLite or the given database URL); only its
event loop runs in a thread of the calling process so that synchronous SDK calls can be made.
:class:`RayLab` is a Ray cluster of this machine (a head and labelled workers) for the ``ray``
provider's tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

from orchard.server.app import OrchardServer, Settings
from orchard.services import users

# Debian's chromium, which the dashboard's browser tests, its screenshots and its benchmark drive
# through Playwright (scripts/setup.sh installs it; no browser is ever downloaded). The flags
# keep a headless start quiet and off the network, which it could not reach anyway.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium_options() -> dict[str, Any]:
    """Playwright's ``chromium.launch`` options for Debian's chromium."""
    return {"executable_path": CHROMIUM, "args": list(CHROMIUM_FLAGS)}


class ServerThread:
    def __init__(
        self,
        home: Path,
        *,
        database_url: str | None = None,
        user_id: str = "admin",
        **settings: Any,
    ) -> None:
        """``settings`` are further :class:`~orchard.server.app.Settings` fields (e.g.
        ``offline=True`` to build model environments from uv's cache only, or
        ``orchestrate=True`` for a server that starts replicas itself)."""
        self.pat = secrets.token_hex(16)
        self.user_id = user_id
        # Tests attach their replicas by hand and make their own clusters unless they ask.
        settings.setdefault("orchestrate", False)
        settings.setdefault("default_cluster", False)
        settings.setdefault("http_port", None)
        self.settings = Settings(
            home=home,
            port=0,
            database_url=database_url,
            bootstrap_user=user_id,
            bootstrap_pat=self.pat,
            **settings,
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, daemon=True, name="orchard-test-server"
        )
        self.server: OrchardServer | None = None

    def _run(self, coro: object) -> object:
        future: Future[object] = asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]
        return future.result(timeout=60)

    def start(self) -> ServerThread:
        self._thread.start()

        async def start() -> OrchardServer:
            server = OrchardServer(self.settings)
            await server.start()
            return server

        self.server = self._run(start())  # type: ignore[assignment]
        return self

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def create_user(self, user_id: str) -> str:
        """A new user on this server; returns their PAT."""
        assert self.server is not None
        with self.server.store.session() as session:
            users.create_user(session, user_id)
            return users.create_pat(session, user_id, description="test")[1]

    def stop(self) -> None:
        if self.server is not None:
            self._run(self.server.stop(grace=1.0))
            self.server = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class RayLab:
    """A Ray cluster of this machine for tests and benchmarks: a head and labelled worker
    nodes started with ``ray start``, every process of each known by its id.

    Ray binds some listeners to every interface whatever it is told, so a ``RayLab`` must run
    in a network namespace whose only interface is loopback (``unshare -n`` then
    ``ip link set lo up``); it refuses to start anywhere else. Token authentication is on (a
    token file under ``temp``, ``RAY_AUTH_MODE=token`` for every node and client).

        lab = RayLab(temp)
        lab.start_head()
        lab.start_worker({"orchard.nodepool": "a"}, cpus=2, memory=2 * 2**30, name="a")
        ...
        lab.kill_node("a")      # as if its machine died
        lab.stop()              # every process it started, by id; raises if one survives
    """

    def __init__(self, temp: Path, port: int = 6379, client_port: int = 10001) -> None:
        self.temp = temp
        self.port, self.client_port = port, client_port
        self.token_file = temp / "ray-token"
        self.ray = str(Path(sys.executable).with_name("ray"))
        if not Path(self.ray).exists():
            self.ray = shutil.which("ray") or "ray"
        self.nodes: dict[str, list[int]] = {}  # node name: ids of the processes it started
        self.started: set[int] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def client_address(self) -> str:
        return f"ray://127.0.0.1:{self.client_port}"

    def env(self, **more: str) -> dict[str, str]:
        """The environment of Ray's nodes and clients: token auth, no usage reports, quick
        detection of a dead node (1 s health checks, 3 misses), patience with a slow start."""

        return {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(self.token_file),
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_health_check_period_ms": "1000",
            "RAY_health_check_timeout_ms": "1000",
            "RAY_health_check_failure_threshold": "3",
            "RAY_raylet_start_wait_time_s": "180",  # a loaded 2-core machine is slow
            **more,
        }

    def start_head(self) -> float:
        """Start the head (no CPUs: replicas go to workers); seconds it took."""
        self._check_namespace()
        self.token_file.write_text(secrets.token_hex(32))
        return self._start(
            "head",
            [
                "--head",
                "--node-ip-address=127.0.0.1",
                f"--port={self.port}",
                f"--ray-client-server-port={self.client_port}",
                "--num-cpus=0",
                "--dashboard-host=127.0.0.1",
                f"--temp-dir={self.temp / 'ray'}",
                "--object-store-memory=100000000",
                "--disable-usage-stats",
            ],
            self.env(),
        )

    def start_worker(
        self,
        labels: dict[str, str],
        *,
        cpus: int = 1,
        memory: int = 2**30,
        name: str = "",
        env: dict[str, str] | None = None,
        auth_mode: bool = True,
    ) -> float:
        """Start a worker node with ``labels`` (named ``name``, for :meth:`kill_node`);
        seconds it took. ``auth_mode=False`` leaves ``RAY_AUTH_MODE`` unset (the token file
        is still there): such a node cannot join (``RuntimeError``)."""
        name = name or f"worker-{len(self.nodes)}"
        label_text = ",".join(f"{k}={v}" for k, v in labels.items())
        node_env = self.env(**(env or {}))
        if not auth_mode:
            node_env.pop("RAY_AUTH_MODE")
        return self._start(
            name,
            [
                f"--address={self.address}",
                "--node-ip-address=127.0.0.1",
                f"--num-cpus={cpus}",
                f"--memory={memory}",
                "--object-store-memory=100000000",
                f"--labels={label_text}",
            ],
            node_env,
        )

    def _start(self, name: str, args: list[str], env: dict[str, str]) -> float:
        before = self._namespace_pids()
        began = time.perf_counter()
        done = subprocess.run(
            [self.ray, "start", *args], env=env, capture_output=True, text=True, timeout=180
        )
        took = time.perf_counter() - began
        self.nodes[name] = sorted(self._namespace_pids() - before)
        self.started.update(self.nodes[name])
        if done.returncode != 0:
            raise RuntimeError(f"`ray start` of {name} failed:\n{done.stderr[-3000:]}")
        return took

    def memory(self, name: str) -> int:
        """Proportional set size (bytes) of node ``name``'s processes now."""
        total = 0
        for pid in self.node_processes(name):
            with contextlib.suppress(psutil.Error):
                total += psutil.Process(pid).memory_full_info().pss
        return total

    def node_processes(self, name: str) -> list[int]:
        """The processes of node ``name`` now: those ``ray start`` left, and their
        descendants (Ray's workers, the runners they started)."""

        found: set[int] = set()
        for pid in self.nodes.get(name, []):
            try:
                proc = psutil.Process(pid)
                found.add(pid)
                found.update(child.pid for child in proc.children(recursive=True))
            except psutil.Error:
                continue
        return sorted(found)

    def kill_node(self, name: str) -> list[int]:
        """SIGKILL every process of node ``name``, as if its machine died; their ids."""
        pids = self.node_processes(name)
        self.started.update(pids)
        _kill(pids)
        return pids

    def pause_node(self, name: str, pause: bool = True) -> None:
        """SIGSTOP (or SIGCONT) every process of node ``name``: unreachable, not dead."""
        for pid in self.node_processes(name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP if pause else signal.SIGCONT)

    def stop(self) -> list[int]:
        """Kill every process any node started (and anything else left in this network
        namespace but this process and its parents), by id; the ids that survived (none)."""

        for name in list(self.nodes):
            self.started.update(self.node_processes(name))
        me = psutil.Process()
        keep = {me.pid, *(p.pid for p in me.parents())}
        rest = self._namespace_pids() - keep - {c.pid for c in me.children(recursive=True)}
        targets = sorted((self.started | rest) - keep)
        for pid in targets:  # paused processes cannot die until they run again
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGCONT)
        _kill(targets)
        return [pid for pid in targets if _alive(pid)]

    @staticmethod
    def _namespace_pids() -> set[int]:

        own = os.readlink("/proc/self/ns/net")
        found = set()
        for pid in psutil.pids():
            try:
                if os.readlink(f"/proc/{pid}/ns/net") == own:
                    found.add(pid)
            except OSError:
                continue
        return found

    @staticmethod
    def _check_namespace() -> None:

        names = set(psutil.net_if_addrs())
        if names - {"lo"}:
            raise RuntimeError(
                "a RayLab runs only in a network namespace whose only interface is loopback "
                f"(this one has {', '.join(sorted(names))}); start it under "
                "`unshare -n sh -c 'ip link set lo up && exec ...'`"
            )


def _kill(pids: list[int]) -> None:

    procs = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            proc.kill()
            procs.append(proc)
        except psutil.Error:
            continue
    psutil.wait_procs(procs, timeout=30)


def _alive(pid: int) -> bool:

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
