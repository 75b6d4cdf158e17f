"""Users and PATs over the V2 API and at the server's start."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from clarifai_grpc.grpc.api import resources_pb2 as r
from clarifai_grpc.grpc.api.status import status_code_pb2 as sc

from orchard import errors
from orchard.services import users
from orchard.services.common import Page
from orchard.store import Store
from orchard.testing import ServerThread
from tests.conftest import Api
from tests.resources import ok


def test_a_pat_description_is_bounded(api):
    response = api.call("PostKeys", keys=[r.Key(description="x" * 513)])
    assert response.status.code == sc.CONN_INVALID_REQUEST, response.status
    assert response.status.description == (
        "the PAT description has 513 characters; write at most 512"
    )
    assert len(ok(api.call("ListKeys")).keys) == 1  # the bootstrap PAT only


# -- a revoked PAT stays revoked -------------------------------------------------------------


def test_ensure_bootstrap(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'orchard.db'}")
    try:
        with store.session() as session:
            assert users.ensure_bootstrap(session, "admin", "first-token") == users.Bootstrap()
            assert users.authenticate(session, "first-token") == "admin"
            (pat,) = users.list_pats(session, "admin", Page())
            users.delete_pat(session, "admin", pat.id)
        with store.session() as session:  # the next start, the same environment
            done = users.ensure_bootstrap(session, "admin", "first-token")
            assert done.token is None and done.revoked is not None
            assert done.revoked.user_id == "admin"
            assert users.list_pats(session, "admin", Page()) == []
            with pytest.raises(errors.InvalidRequest, match="was revoked and stays revoked"):
                users.create_pat(session, "admin", token="first-token")
        with store.session() as session:  # the operator sets a new token
            assert users.ensure_bootstrap(session, "admin", "second-token") == users.Bootstrap()
            assert users.authenticate(session, "second-token") == "admin"
        with store.session() as session:  # no token, an initialised store: nothing to do
            assert users.ensure_bootstrap(session, "admin", None) == users.Bootstrap()
            assert len(users.list_pats(session, "admin", Page())) == 1
    finally:
        store.close()


def _restart(home: Path, pat: str) -> ServerThread:
    server = ServerThread(home)
    server.pat = server.settings.bootstrap_pat = pat
    return server.start()


def test_a_revoked_bootstrap_pat_stays_revoked_across_restarts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / "home"
    server = ServerThread(home).start()
    bootstrap = server.pat
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            api = Api(channel, bootstrap, server.user_id)
            (key,) = ok(api.call("ListKeys")).keys
            spare = ok(api.call("PostKeys", keys=[r.Key(description="spare")])).keys[0].id
            ok(api.call("DeleteKey", key_id=key.id))  # its owner revokes it with itself
            assert api.call("GetUser").status.code == sc.CONN_KEY_INVALID
    finally:
        server.stop()
    again = _restart(home, bootstrap)  # ORCHARD_BOOTSTRAP_PAT still names it
    try:
        with grpc.insecure_channel(f"127.0.0.1:{again.port}") as channel:
            api = Api(channel, bootstrap, again.user_id)
            assert api.call("GetUser").status.code == sc.CONN_KEY_INVALID
            keys = ok(api.as_user(again.user_id, spare).call("ListKeys")).keys
            assert [k.description for k in keys] == ["spare"]
    finally:
        again.stop()
    assert any(
        "the bootstrap PAT (ORCHARD_BOOTSTRAP_PAT) was revoked by user admin" in r.getMessage()
        and "set ORCHARD_BOOTSTRAP_PAT to a new token" in r.getMessage()
        for r in caplog.records
    )
