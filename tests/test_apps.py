"""Apps and the models in them over the V2 API: what their descriptions may hold."""

from __future__ import annotations

from clarifai_grpc.grpc.api import resources_pb2 as r
from clarifai_grpc.grpc.api.status import status_code_pb2 as sc

from tests.resources import ok


def test_an_app_description_is_bounded(api):
    response = api.call("PostApps", apps=[r.App(id="a", description="x" * (8 << 20))])
    assert response.status.code == sc.CONN_INVALID_REQUEST, response.status
    assert response.status.description == (
        "the app description has 8388608 characters; write at most 512"
    )
    ok(api.call("PostApps", apps=[r.App(id="a", description="x" * 512)]))


def test_a_model_description_is_bounded(api):
    ok(api.call("PostApps", apps=[r.App(id="a")]))
    uid = r.UserAppIDSet(user_id=api.user_id, app_id="a")
    response = api.call(
        "PostModels", user_app_id=uid, models=[r.Model(id="m", description="x" * 513)]
    )
    assert response.status.code == sc.MODEL_INVALID_ARGUMENT, response.status
    assert "the model description has 513 characters; write at most 512" in (
        response.status.description
    )
    assert ok(api.call("ListModels", user_app_id=uid)).models == []
