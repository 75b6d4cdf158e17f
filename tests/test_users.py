"""Users and PATs over the V2 API and at the server's start."""

from __future__ import annotations

from clarifai_grpc.grpc.api import resources_pb2 as r
from clarifai_grpc.grpc.api.status import status_code_pb2 as sc

from tests.resources import ok


def test_a_pat_description_is_bounded(api):
    response = api.call("PostKeys", keys=[r.Key(description="x" * 513)])
    assert response.status.code == sc.CONN_INVALID_REQUEST, response.status
    assert response.status.description == (
        "the PAT description has 513 characters; write at most 512"
    )
    assert len(ok(api.call("ListKeys")).keys) == 1  # the bootstrap PAT only
