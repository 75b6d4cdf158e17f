"""ListLogEntries over the V2 API, in both forms: by model version, and by runner alone (what
the official CLI's `deployment logs` and `model logs` send)."""

from __future__ import annotations

import pytest
from clarifai_grpc.grpc.api.status import status_code_pb2 as sc

from orchard.services import logs
from tests.resources import make_runner, make_stack, ok


@pytest.fixture
def runner(server, api):
    """Runner of model m in cc/np, with two replica lines, an event and another runner's line."""
    version = make_stack(api)
    made = make_runner(api)
    with server.server.store.session() as session:
        where = ("cc", "np", made.id)
        logs.append_logs(
            session, logs.LogRef(api.user_id, "m", version, logs.RUNNER, *where), ["one", "two"]
        )
        logs.append_logs(
            session, logs.LogRef(api.user_id, "m", version, logs.EVENTS, *where), ["started"]
        )
        other = logs.LogRef(api.user_id, "m", version, logs.RUNNER, "cc", "np", "another")
        logs.append_logs(session, other, ["not this runner's"])
    return made.id


def _messages(api, **fields):
    response = ok(api.call("ListLogEntries", **fields))
    return [entry.message for entry in response.log_entries]


@pytest.mark.parametrize(
    ("log_type", "expected"), [("runner", ["one", "two"]), ("runner.events", ["started"])]
)
def test_logs_by_runner_alone_as_the_official_cli_asks(api, runner, log_type, expected):
    by_runner = {"runner_id": runner, "compute_cluster_id": "cc", "nodepool_id": "np"}
    assert _messages(api, log_type=log_type, **by_runner, page=1, per_page=50) == expected
    assert _messages(api, log_type=log_type, runner_id=runner) == expected


def test_logs_of_an_unknown_runner_or_of_nothing_named_say_so(api, other, runner):
    unknown = api.call("ListLogEntries", log_type="runner", runner_id="ghost")
    assert unknown.status.code == sc.RUNNER_DOES_NOT_EXIST
    assert other.call("ListLogEntries", log_type="runner", runner_id=runner).status.code == (
        sc.RUNNER_DOES_NOT_EXIST
    )
    unnamed = api.call("ListLogEntries", log_type="runner", compute_cluster_id="cc")
    assert unnamed.status.code == sc.CONN_INVALID_REQUEST
    assert "set model_id and model_version_id, or runner_id" in unnamed.status.description
