"""Building a model version's environment with uv.

An environment is a virtual environment with the model's requirements and the runner's own
dependencies (pinned to the server's versions, so runner and server speak the same wire
format). It is keyed by (Python version, requirements, runner pins, package sources) and
cached under ``HOME/envs/<key>``: a second version with the same requirements reuses it.
Orchard's own code reaches the environment through a ``.pth`` file pointing at a copy of the
``orchard`` package under ``HOME/runtime`` (no build step, no download).

uv never downloads an interpreter (``--no-python-downloads``). A ``python_version`` that is not
installed is a build error naming the versions that are, unless the server allows falling
back to its own interpreter, which the build log then says.

Builds run as asyncio subprocesses, so they never block the server's other requests; their
output goes to the version's build log (``ListLogEntries`` with log type ``builder``).
"""

from __future__ import annotations

import asyncio
import compileall
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path

import orchard

log = logging.getLogger(__name__)
RUNNER_PACKAGES = ("grpcio", "protobuf", "clarifai-grpc", "pyyaml", "pydantic")
READY = "orchard-env-ready"


class BuildError(Exception):
    """A build failed for a reason the model's author can act on (said in the message)."""


@dataclass(frozen=True)
class Interpreter:
    path: str
    version: str  # "3.11"


@dataclass
class BuildSettings:
    envs: Path
    runtime: Path
    uv: str
    find_links: list[Path] = field(default_factory=list)
    offline: bool = False
    python_fallback: bool = True


def runner_pins() -> list[str]:
    """The runner's dependencies at the versions this server runs."""
    return [f"{name}=={metadata.version(name)}" for name in RUNNER_PACKAGES]


def normalized_requirements(text: str) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return sorted({line for line in lines if line})


def env_key(python: str, requirements: str, pins: list[str], settings: BuildSettings) -> str:
    material = json.dumps(
        {
            "python": python,
            "requirements": normalized_requirements(requirements),
            "runner": pins,
            "find_links": [str(p) for p in settings.find_links],
        },
        sort_keys=True,
    )
    return hashlib.sha256(material.encode()).hexdigest()[:24]


def _version_of(path: str) -> str | None:
    match = re.search(r"python(\d+\.\d+)", Path(path).name) or re.search(
        r"/(\d+\.\d+)(?:\.\d+)?/", path
    )
    return match.group(1) if match else None


def installed_interpreters() -> dict[str, str]:
    """Python versions on this machine (major.minor → executable), without downloading any."""
    found = {f"{sys.version_info.major}.{sys.version_info.minor}": sys.executable}
    patterns = [
        "/usr/bin/python3.*",
        "/usr/local/bin/python3.*",
        str(Path.home() / ".pyenv/versions/*/bin/python3.*"),
    ]
    for pattern in patterns:
        for candidate in sorted(Path("/").glob(pattern.lstrip("/"))):
            version = _version_of(str(candidate))
            if (
                version
                and re.fullmatch(r"python3\.\d+", candidate.name)
                and os.access(candidate, os.X_OK)
            ):
                found.setdefault(version, str(candidate))
    return found


def choose_interpreter(
    requested: str, settings: BuildSettings, say: Callable[[str], None]
) -> Interpreter:
    available = installed_interpreters()
    version = requested or f"{sys.version_info.major}.{sys.version_info.minor}"
    if version in available:
        return Interpreter(available[version], version)
    names = ", ".join(sorted(available))
    if not settings.python_fallback:
        raise BuildError(
            f"Python {version} (build_info.python_version) is not installed on the server; "
            f"installed: {names}. Set build_info.python_version to one of them"
        )
    own = f"{sys.version_info.major}.{sys.version_info.minor}"
    say(
        f"Python {version} (build_info.python_version) is not installed on this server "
        f"(installed: {names}); building with Python {own} instead because the server allows "
        "falling back (orchard serve --no-python-fallback turns this into an error)"
    )
    return Interpreter(sys.executable, own)


@cache
def _code_version(source: Path) -> str:
    """A digest of the running ``orchard`` code (read once per process: it does not change
    under a running server)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in source.rglob("*.py") if "__pycache__" not in p.parts):
        digest.update(path.relative_to(source).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def runtime_copy(root: Path) -> Path:
    """A copy of the running ``orchard`` package for environments to import (one per code
    version). Returns the folder to put on their path."""
    source = Path(orchard.__file__).resolve().parent
    target = root / _code_version(source)
    if not (target / "orchard").is_dir():
        staging = root / f".{target.name}.{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(
            source, staging / "orchard", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
        compileall.compile_dir(staging, quiet=1)  # replicas see it read-only (see env_commands)
        os.replace(staging, target)
    return target


def base_interpreter(env: Path) -> tuple[Path, ...]:
    """The installation the environment's interpreter belongs to (``home`` in its
    ``pyvenv.cfg`` is that installation's ``bin``), when it is not under ``/usr``; a replica's
    sandbox shows it read-only so that the environment's ``python`` runs."""
    try:
        lines = (env / "pyvenv.cfg").read_text().splitlines()
    except OSError:
        return ()
    for line in lines:
        key, _, value = line.partition("=")
        if key.strip() == "home" and value.strip():
            prefix = Path(value.strip()).resolve().parent
            system = prefix == Path("/usr") or Path("/usr") in prefix.parents
            return () if system or prefix == Path("/") else (prefix,)
    return ()


def env_commands(
    uv: str,
    python: str,
    env: str,
    requirements: str,
    pins: list[str],
    find_links: list[str],
    offline: bool,
) -> tuple[list[str], list[str]]:
    """uv's two steps that build an environment at ``env``: create it with ``python`` (a path
    or a version), then install ``requirements`` (a requirements.txt) and ``pins``, compiled."""
    create = [uv, "venv", "--quiet", "--no-python-downloads", "--python", python, env]
    # Compiled to bytecode now: a sandboxed replica sees its environment read-only, so it could
    # never write the .pyc files itself and would compile every module at every start.
    install = [uv, "pip", "install", "--compile-bytecode", "--python", f"{env}/bin/python"]
    install += ["-r", requirements, *pins]
    for folder in find_links:
        install += ["--find-links", folder]
    if offline:
        install.append("--offline")
    return create, install


class BuildLog:
    """Build output lines, written to the log store in batches."""

    def __init__(self, write: Callable[[list[str]], None]) -> None:
        self._write = write
        self._lines: list[str] = []
        self._last = time.monotonic()

    def line(self, text: str) -> None:
        self._lines.append(text.rstrip()[:4000])

    def due(self) -> bool:
        return len(self._lines) >= 50 or time.monotonic() - self._last > 0.5

    async def flush(self) -> None:
        lines, self._lines = self._lines, []
        self._last = time.monotonic()
        if lines:
            await asyncio.to_thread(self._write, lines)


class EnvBuilder:
    """Creates and caches environments; one build per key at a time."""

    def __init__(self, settings: BuildSettings) -> None:
        self.settings = settings
        settings.envs.mkdir(parents=True, exist_ok=True)
        settings.runtime.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, asyncio.Lock] = {}

    def env_path(self, key: str) -> Path:
        return self.settings.envs / key

    async def ensure_env(self, python: Interpreter, requirements: Path, out: BuildLog) -> str:
        """The key of a ready environment for these requirements (built unless cached)."""
        pins = runner_pins()
        key = env_key(python.version, requirements.read_text(), pins, self.settings)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            env = self.env_path(key)
            if (env / READY).exists():
                out.line(f"environment {key} (Python {python.version}) is cached; reusing it")
            else:
                await self._create(env, python, requirements, pins, out)
            self._link_runtime(env)
        return key

    async def _create(
        self, env: Path, python: Interpreter, requirements: Path, pins: list[str], out: BuildLog
    ) -> None:
        staging = env.with_name(f".{env.name}.building")
        shutil.rmtree(staging, ignore_errors=True)
        out.line(f"creating environment with Python {python.version} ({python.path})")
        create, install = env_commands(
            self.settings.uv,
            python.path,
            str(staging),
            str(requirements),
            pins,
            [str(p) for p in self.settings.find_links],
            self.settings.offline,
        )
        await self.run(create, out)
        out.line("installing requirements.txt and the runner's dependencies: " + " ".join(pins))
        await self.run(install, out)
        (staging / READY).write_text(json.dumps({"python": python.version, "pins": pins}))
        shutil.rmtree(env, ignore_errors=True)
        os.replace(staging, env)

    def _link_runtime(self, env: Path) -> None:
        runtime = runtime_copy(self.settings.runtime)
        for site in env.glob("lib/python*/site-packages"):
            (site / "_orchard_runtime.pth").write_text(f"{runtime}\n")

    async def run(self, command: list[str], out: BuildLog) -> None:
        """Run one build tool, its output into the log; BuildError if it fails."""
        tool = Path(command[0]).name + (f" {command[1]}" if len(command) > 1 else "")
        env = {
            **os.environ,
            "UV_PYTHON_DOWNLOADS": "never",
            "UV_NO_PROGRESS": "1",
            "VIRTUAL_ENV": "",
        }
        proc = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env
        )
        assert proc.stdout is not None
        async for raw in proc.stdout:
            out.line(raw.decode(errors="replace"))
            if out.due():
                await out.flush()
        code = await proc.wait()
        await out.flush()
        if code != 0:
            raise BuildError(
                f"`{tool}` failed (exit code {code}); its output is in the build log above"
            )
