"""The store against SQLite and a real PostgreSQL: migrations, persistence across a restart,
and a failed request writing nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from clarifai_grpc.grpc.api.status import status_code_pb2 as sc
from sqlalchemy import event, inspect, select, text

from orchard import errors
from orchard.store import Store
from orchard.store.models import ComputeClusterRow, UserRow
from orchard.testing import ServerThread
from tests.conftest import Api
from tests.resources import cluster, make_deployment, make_stack, ok


def test_migrations_create_the_schema_and_are_idempotent(database_url):
    first = Store(database_url)
    first.close()
    second = Store(database_url)  # upgrading an up-to-date schema is a no-op
    tables = set(inspect(second.engine).get_table_names())
    second.close()
    assert {
        "users",
        "pats",
        "apps",
        "models",
        "model_versions",
        "compute_clusters",
        "nodepools",
        "deployments",
        "deployment_nodepools",
        "alembic_version",
    } <= tables


def test_failed_session_writes_nothing(database_url):
    store = Store(database_url)
    try:
        with pytest.raises(RuntimeError), store.session() as session:
            session.add(UserRow(id="ghost"))
            session.flush()
            raise RuntimeError("fail after a write")
        with store.session() as session:
            assert session.get(UserRow, "ghost") is None
    finally:
        store.close()


def _serve(home: Path, database_url: str, pat: str | None = None) -> ServerThread:
    server = ServerThread(home, database_url=database_url)
    if pat is not None:
        server.pat = pat
        server.settings.bootstrap_pat = pat
    return server.start()


def test_resources_survive_a_server_restart(database_url, tmp_path):
    server = _serve(tmp_path, database_url)
    pat = server.pat
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            api = Api(channel, pat, "admin")
            version = make_stack(api)
            make_deployment(api, "dep", version=version)
    finally:
        server.stop()
    again = _serve(tmp_path, database_url, pat=pat)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{again.port}") as channel:
            api = Api(channel, pat, "admin")
            dep = ok(api.call("GetDeployment", deployment_id="dep")).deployment
            assert dep.worker.model.model_version.id == version
            assert [n.id for n in ok(api.call("ListNodepools")).nodepools] == ["np"]
    finally:
        again.stop()


def test_rejected_request_leaves_no_row(database_url, tmp_path):
    server = _serve(tmp_path, database_url)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            api = Api(channel, server.pat, "admin")
            response = api.call(
                "PostComputeClusters",
                compute_clusters=[cluster("a"), cluster("b", region="nowhere")],
            )
            assert response.status.code != 10000
        assert server.server is not None
        with server.server.store.session() as session:
            assert session.scalars(select(ComputeClusterRow)).all() == []
    finally:
        server.stop()


def fill_up(store: Store) -> None:
    """Hold the SQLite database at the pages it has: the next one it needs is refused as
    "database or disk is full", as on a full disk."""
    with store.session() as session:
        pages = session.execute(text("PRAGMA page_count")).scalar()

    def cap(connection: Any, _record: Any) -> None:
        connection.execute(f"PRAGMA max_page_count = {pages}")

    event.listen(store.engine, "connect", cap)
    store.engine.dispose()  # the pooled connections go; new ones get the cap


def test_a_full_database_is_storage_full_and_keeps_nothing(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'orchard.db'}")
    try:
        fill_up(store)
        with pytest.raises(errors.StorageFull) as caught, store.session() as session:
            session.add_all(UserRow(id=f"user-{i:04d}-{'x' * 50}") for i in range(500))
        assert "the server's storage is full" in caught.value.message
        assert "database or disk is full" in str(caught.value.__cause__)
        with store.session() as session:
            assert session.scalars(select(UserRow)).all() == []
    finally:
        store.close()


def test_a_full_database_answers_storage_full_not_internal_error(tmp_path):
    with (
        ServerThread(tmp_path / "home") as server,
        grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        assert server.server is not None
        fill_up(server.server.store)
        api = Api(channel, server.pat, server.user_id)
        big = [cluster(f"c{i}", description="x" * 500) for i in range(100)]
        response = api.call("PostComputeClusters", compute_clusters=big)
        assert response.status.code == sc.INTERNAL_RESOURCE_EXHAUSTED, response.status
        assert response.status.description.startswith(
            "the server's storage is full: its database has no room left, and nothing of this "
            "request was saved; ask the server's operator to free disk space"
        )
        assert ok(api.call("ListComputeClusters")).compute_clusters == []
