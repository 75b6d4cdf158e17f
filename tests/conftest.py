"""Shared fixtures: a real Orchard server on loopback, a raw V2 caller, PostgreSQL when present."""

from __future__ import annotations

import dataclasses
import http.server
import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import grpc
import pytest
from clarifai_grpc.grpc.api import resources_pb2

from orchard import wire
from orchard.testing import ServerThread
from tests.replicas import Replica
from tests.resources import deploy, make_cluster, make_nodepool

POSTGRES_ENV = "ORCHARD_TEST_POSTGRES_URL"


class Api:
    """Raw V2 calls as one user: ``api.call("GetUser", user_app_id=...)``."""

    def __init__(self, channel: grpc.Channel, pat: str, user_id: str) -> None:
        self.channel, self.pat, self.user_id = channel, pat, user_id

    def call(self, name: str, request: Any = None, /, **fields: Any) -> Any:
        if request is None:
            fields.setdefault("user_app_id", resources_pb2.UserAppIDSet(user_id=self.user_id))
            request = wire.request_class(name)(**fields)
        metadata = (("authorization", f"Key {self.pat}"),)
        return wire.callable_for(self.channel, name)(request, metadata=metadata, timeout=30)

    def as_user(self, user_id: str, pat: str) -> Api:
        return Api(self.channel, pat, user_id)


def postgres_url() -> str | None:
    return os.environ.get(POSTGRES_ENV) or None


@pytest.fixture
def fresh_postgres() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test (skips when no server is configured)."""
    admin_url = postgres_url()
    if admin_url is None:
        pytest.skip(f"no PostgreSQL server: set {POSTGRES_ENV} (.ci/run does)")
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"orchard_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(admin_url, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL at {POSTGRES_ENV} is not reachable: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store test runs against SQLite and against a real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'orchard.db'}"
    return str(request.getfixturevalue("fresh_postgres"))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    with ServerThread(tmp_path / "home", offline=True) as running:
        yield running


@pytest.fixture
def api(server: ServerThread) -> Iterator[Api]:
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield Api(channel, server.pat, server.user_id)
    finally:
        channel.close()


@pytest.fixture
def other(server: ServerThread, api: Api) -> Api:
    """A second user of the same server."""
    return api.as_user("bob", server.create_user("bob"))


# -- end-to-end stacks: real uploads, deployments and runner processes -------------------


@pytest.fixture
def pool(api):
    make_cluster(api)
    make_nodepool(api)


@pytest.fixture
def echo(server, api, pool, tmp_path):
    runner_id, package, python = deploy(server, api, "echo", "echo-dep")
    replica = Replica(server, runner_id, package, tmp_path, python=str(python)).start()
    yield replica
    assert replica.stop() == 0, replica.output()


@pytest.fixture
def file_server(server):
    """Serve small files on loopback, and let the server fetch from there."""
    files: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = files.get(self.path.lstrip("/"))
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    host = f"127.0.0.1:{httpd.server_address[1]}"
    fetcher = server.server.fetcher
    fetcher.policy = dataclasses.replace(fetcher.policy, allowed_hosts=frozenset({host}))

    def add(name: str, body: bytes) -> str:
        files[name] = body
        return f"http://{host}/{name}"

    yield add
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


# -- the official clarifai SDK, in a virtual environment of its own --------------------

CLARIFAI = "12.5.0"


def _uv() -> str:
    found = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    if not Path(found).exists():
        pytest.fail(
            "uv is needed to build the official SDK's environment; scripts/test.sh installs it"
        )
    return found


def official_upload(official_python: Path, server: Any, package: Path, home: Path) -> None:
    """``clarifai model upload PACKAGE`` with the official CLI (``official_python``'s) against
    ``server`` (a ServerThread), for a user whose home is ``home``; it must succeed."""
    config = home / "clarifai.yaml"
    config.write_text(
        "current_context: orchard\ncontexts:\n  orchard:\n"
        f"    CLARIFAI_API_BASE: {server.base_url}\n    CLARIFAI_PAT: {server.pat}\n"
        f"    CLARIFAI_USER_ID: {server.user_id}\n"
    )
    tools = f"{official_python.parent}:{Path(sys.executable).parent}"  # uv and ruff
    env = {
        "PATH": f"{tools}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home),
        "CLARIFAI_API_BASE": server.base_url,
        "UV_OFFLINE": "1",
    }
    cli = [str(official_python.with_name("clarifai")), "--config", str(config)]
    done = subprocess.run(
        [*cli, "model", "upload", str(package)],
        env=env,
        input="y\n",
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="session")
def official_python() -> Path:
    """A virtual environment with clarifai==12.5.0 and the same wire package as Orchard."""
    pins = [
        f"clarifai=={CLARIFAI}",
        f"clarifai-grpc=={version('clarifai-grpc')}",
        f"grpcio=={version('grpcio')}",
        f"protobuf=={version('protobuf')}",
    ]
    venv = (
        Path(__file__).resolve().parents[1]
        / ".cache"
        / "official-sdk"
        / "-".join(p.replace("==", "") for p in pins)
    )
    python = venv / "bin" / "python"
    if not (venv / "ready").exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run(
            [_uv(), "venv", "--quiet", str(venv), "--python", sys.executable], check=True
        )
        subprocess.run(
            [_uv(), "pip", "install", "--quiet", "--python", str(python), *pins],
            check=True,
            timeout=600,
        )
        (venv / "ready").write_text("\n".join(pins))
    return python
