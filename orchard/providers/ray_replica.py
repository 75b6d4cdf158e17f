"""What runs on a Ray node for the ``ray`` provider: one runner replica as a Ray actor.

This module is shipped to the cluster by value (the driver registers it with Ray's pickler), so
a Ray node needs Ray and uv but not Orchard: it imports nothing but the standard library at the
top, and ``ray`` inside the helpers that run as Ray tasks.

The actor (:class:`ReplicaActor`, made with the model's CPUs, GPUs and memory, on one node of the
nodepool's group) gets the model package and Orchard's runner code as bytes through Ray's
object store, because Ray nodes share no disk with the server. On its node it:

1. unpacks both into a node-local cache (``$ORCHARD_RAY_CACHE``, default
   ``~/.cache/orchard-ray``), once per package digest and per code version;
2. builds the version's environment there with uv, keyed like the server's (same key, Python
   version and pins, the server's uv steps), or reuses it; concurrent builds of one key on one
   machine wait for each other (a file lock);
3. runs ``python -m orchard.runners.serve`` in it as a subprocess, which connects back to the
   server like any runner; its output (and the build steps') goes to a file the driver reads
   with :meth:`ReplicaActor.read`. As on the server's host, its environment is an allowlist
   (:func:`runner_environment`: nothing of the Ray worker's is inherited but the locale, the
   time zone and the GPUs Ray gave it), it gets a private home that is removed when it ends,
   and its token arrives on its standard input, never in its argv or environment. A Ray node
   is no sandbox: see docs/ray.md for what it does and does not keep apart.

:meth:`ReplicaActor.run` does all that once and returns when the runner has exited (any later
call just waits for the same end): ``{"code": exit code or None, "reason": why}``.
:meth:`ReplicaActor.stop` asks the runner to drain (SIGTERM) and kills it when the grace is
over. The runner dies with the actor's process (``PR_SET_PDEATHSIG``), so a Ray worker that is
killed leaves no runner behind. An actor whose runner has ended and that nobody killed (its
server is gone) exits by itself after ``exit_after`` seconds (when its spec says).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

READY = "orchard-env-ready"
READ_LIMIT = 1 << 16
PR_SET_PDEATHSIG = 1


def cache_root() -> Path:
    configured = os.environ.get("ORCHARD_RAY_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "orchard-ray"


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (made when missing) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def unpack_once(data: bytes, target: Path, locks: Path) -> Path:
    """Extract the tar.gz ``data`` into ``target`` unless a previous call did."""
    if target.is_dir():
        return target
    with locked(locks / f"{target.parent.name}-{target.name}.lock"):
        if target.is_dir():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(staging, filter="data")
                else:  # pragma: no cover - Pythons before 3.11.4 check nothing themselves
                    tar.extractall(staging)
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return target


def find_uv() -> str:
    """uv on this node: the ``uv`` package of Ray's Python, next to it, or on PATH."""
    try:
        from uv import find_uv_bin  # type: ignore[import-not-found,unused-ignore]

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        pass
    beside = Path(sys.executable).with_name("uv")
    if beside.exists():
        return str(beside)
    found = shutil.which("uv")
    if found is None:
        raise RuntimeError(
            "uv is not installed on this Ray node; install it in the nodes' Python "
            "(pip install uv) or put it on PATH"
        )
    return found


# What a runner's environment takes from the Ray worker's (the same allowlist as
# orchard.providers.sandbox.replica_environment on the server's host; this module imports no
# Orchard code, so it is written out here).
INHERITED = ("LANG", "LC_ALL", "TZ", "LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES")
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def runner_environment(private: Path, bin_dir: Path, declared: dict[str, str]) -> dict[str, str]:
    """A runner's whole environment: PATH, a private HOME and TMPDIR under ``private``, the
    locale, time zone and Ray's GPUs, and what the model's config declares."""
    env = {k: os.environ[k] for k in INHERITED if k in os.environ}
    env.setdefault("LANG", "C.UTF-8")
    env.update(declared)
    env.update(
        {
            "PATH": f"{bin_dir}:{SYSTEM_PATH}",
            "HOME": str(private / "home"),
            "TMPDIR": str(private / "tmp"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class ReplicaActor:
    """One runner replica on this node (see the module's docstring)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.root = cache_root()
        self.log_path = self.root / "logs" / f"{spec['id']}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.write_bytes(b"")
        self._lock = threading.Lock()
        self._began = False
        self._done = threading.Event()
        self._result: dict[str, Any] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._stop_grace: float | None = None

    # -- what the driver calls ---------------------------------------------------------------

    def run(self, package: bytes | None, runtime: bytes | None) -> dict[str, Any]:
        with self._lock:
            first, self._began = not self._began, True
        if first:
            try:
                self._result = self._run(package, runtime)
            except Exception as exc:
                self._say(f"error: {exc}")
                self._result = {"code": None, "reason": f"its start on the Ray node failed: {exc}"}
            finally:
                self._done.set()
                if self.spec.get("exit_after") is not None:
                    self._exit_later(float(self.spec["exit_after"]))
        self._done.wait()
        return self._result

    def read(self, offset: int) -> tuple[str, int]:
        """Output from byte ``offset`` (whole lines only) and the offset after it."""
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(offset)
                data = handle.read(READ_LIMIT)
        except OSError:
            return "", offset
        end = data.rfind(b"\n") + 1
        return data[:end].decode("utf-8", "replace"), offset + end

    def stop(self, grace: float) -> None:
        """Drain: SIGTERM to the runner, SIGKILL when ``grace`` seconds have passed. A replica
        that has not started its runner yet does not start it."""
        with self._lock:
            if self._stop_grace is not None:
                return
            self._stop_grace = grace
            proc = self._proc
        if proc is not None:
            self._drain(proc, grace)

    def where(self) -> dict[str, Any]:
        import ray  # type: ignore[import-not-found,unused-ignore]

        return {"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}

    # -- on the node ----------------------------------------------------------------------------

    def _run(self, package: bytes | None, runtime: bytes | None) -> dict[str, Any]:
        if package is None or runtime is None:
            return {"code": None, "reason": "it was adopted before it ever started"}
        spec = self.spec
        locks = self.root / "locks"
        package_dir = unpack_once(package, self.root / "packages" / spec["package_digest"], locks)
        code_dir = unpack_once(runtime, self.root / "runtime" / spec["runtime_version"], locks)
        env = self._environment(package_dir, locks)
        for site in env.glob("lib/python*/site-packages"):
            (site / "_orchard_runtime.pth").write_text(f"{code_dir}\n")
        argv = serve_argv(
            str(env / "bin" / "python"), str(package_dir), spec["server"], spec["args"]
        )
        private = self.root / "homes" / spec["id"]
        for folder in (private / "home", private / "tmp"):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        child_env = runner_environment(private, env / "bin", dict(spec.get("declared", ())))
        try:
            with self._lock:
                if self._stop_grace is not None:
                    return {"code": 0, "reason": "it was stopped before its runner started"}
                self._proc = self._spawn(argv, child_env, spec["token"])
                proc = self._proc
            code = proc.wait()
        finally:
            shutil.rmtree(private, ignore_errors=True)
        return {"code": code, "reason": ""}

    def _spawn(self, argv: list[str], env: dict[str, str], token: str) -> subprocess.Popen[bytes]:
        """The runner, its token written to its standard input."""
        read, write = os.pipe()
        try:
            os.write(write, token.encode() + b"\n")
            os.close(write)
            with open(self.log_path, "ab") as out:
                return subprocess.Popen(
                    argv,
                    env=env,
                    stdin=read,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                )
        finally:
            os.close(read)

    def _environment(self, package_dir: Path, locks: Path) -> Path:
        spec = self.spec
        env = self.root / "envs" / spec["env_key"]
        if (env / READY).exists():
            return env
        with locked(locks / f"env-{spec['env_key']}.lock"):
            if (env / READY).exists():
                return env
            self._say(f"building environment {spec['env_key']} on this Ray node")
            staging = env.with_name(f".{env.name}.building")
            shutil.rmtree(staging, ignore_errors=True)
            values = {
                "{uv}": find_uv(),
                "{python}": self._python(spec["python_version"]),
                "{env}": str(staging),
                "{requirements}": str(package_dir / "requirements.txt"),
            }
            for command in spec["commands"]:
                self._tool([_fill(part, values) for part in command])
            (staging / READY).write_text(json.dumps({"python": spec["python_version"]}))
            shutil.rmtree(env, ignore_errors=True)
            os.replace(staging, env)
        return env

    @staticmethod
    def _python(version: str) -> str:
        """This node's interpreter when it is ``version`` (the one Ray runs), else the version
        for uv to find."""
        own = f"{sys.version_info.major}.{sys.version_info.minor}"
        return sys.executable if not version or version == own else version

    def _tool(self, command: list[str]) -> None:
        env = {
            **os.environ,
            "UV_PYTHON_DOWNLOADS": "never",
            "UV_NO_PROGRESS": "1",
            "VIRTUAL_ENV": "",
        }
        with open(self.log_path, "ab") as out:
            code = subprocess.run(
                command, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            ).returncode
        if code != 0:
            tool = " ".join(Path(part).name for part in command[:2])
            raise RuntimeError(f"`{tool}` failed with exit code {code} while building")

    def _drain(self, proc: subprocess.Popen[bytes], grace: float) -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)

        def kill() -> None:
            if proc.poll() is None:
                self._say(f"the runner did not drain within {grace:g} s; killing it")
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()

        timer = threading.Timer(grace, kill)
        timer.daemon = True
        timer.start()

    def _say(self, line: str) -> None:
        with contextlib.suppress(OSError), open(self.log_path, "a") as out:
            out.write(f"[orchard on the Ray node] {line}\n")

    @staticmethod
    def _exit_later(seconds: float) -> None:
        def leave() -> None:
            time.sleep(seconds)
            os._exit(0)

        threading.Thread(target=leave, daemon=True).start()


def _fill(part: str, values: dict[str, str]) -> str:
    for placeholder, value in values.items():
        part = part.replace(placeholder, value)
    return part


# -- Ray tasks the driver runs inside the cluster ---------------------------------------------


def cluster_config() -> dict[str, Any] | None:
    """The autoscaler's node groups (name, resources, min and max nodes), or None when the
    cluster has no autoscaler that publishes them."""
    from ray._private.state import state  # type: ignore[import-not-found,unused-ignore]

    config = state.get_cluster_config()
    if config is None or not config.node_group_configs:
        return None
    return {
        "groups": [
            {
                "name": group.name,
                "resources": dict(group.resources),
                "labels": dict(getattr(group, "labels", {}) or {}),
                "min": int(group.min_count),
                "max": int(group.max_count),
            }
            for group in config.node_group_configs
        ]
    }


def request_resources(bundles: list[dict[str, float]], selectors: list[dict[str, str]]) -> None:
    """Ask the cluster's autoscaler for room for ``bundles`` (replacing the last request)."""
    from ray.autoscaler.sdk import (  # type: ignore[import-not-found,unused-ignore]
        request_resources as ask,
    )

    ask(bundles=bundles, bundle_label_selectors=selectors)


def serve_argv(python: str, package: str, server: str, args: list[str]) -> list[str]:
    """The runner's command line on a Ray node: :func:`orchard.runners.command.serve_command`,
    which this stdlib-only module cannot import (a test holds the two equal)."""
    return [python, "-m", "orchard.runners.serve", "--package", package, "--server", server, *args]
