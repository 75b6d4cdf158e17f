"""Apps over the V2 API: edits, the empty listings of what Orchard does not keep, and what
apps' and models' descriptions may hold."""

from __future__ import annotations

import pytest
from clarifai_grpc.grpc.api import resources_pb2 as r
from clarifai_grpc.grpc.api.status import status_code_pb2 as sc

from tests.resources import ok

UID = r.UserAppIDSet(user_id="admin", app_id="app")


def test_patch_app_and_apps(api):
    ok(api.call("PostApps", apps=[r.App(id="app"), r.App(id="other")]))
    one = ok(
        api.call(
            "PatchApp",
            user_app_id=UID,
            app=r.App(id="app", visibility=r.Visibility(gettable=10)),
            action="overwrite",
        )
    ).app
    assert one.visibility.gettable == 10
    many = ok(
        api.call("PatchApps", apps=[r.App(id="app", description="a"), r.App(id="other", notes="n")])
    ).apps
    assert [(a.id, a.description, a.notes) for a in many] == [("app", "a", ""), ("other", "", "n")]
    assert ok(api.call("GetApp", user_app_id=UID)).app.visibility.gettable == 10
    missing = api.call("PatchApps", apps=[r.App(id="ghost")])
    assert missing.status.code == sc.CONN_DOES_NOT_EXIST


@pytest.mark.parametrize("rpc", ["ListWorkflows", "ListDatasets", "ListConcepts", "ListSecrets"])
def test_listings_of_what_orchard_does_not_keep_are_empty(api, rpc):
    ok(api.call("PostApps", apps=[r.App(id="app")]))
    response = ok(api.call(rpc, user_app_id=UID))
    assert not any(response.ListFields()[1:]), response  # only the status is set


@pytest.mark.parametrize("rpc", ["ListWorkflows", "ListDatasets", "ListConcepts"])
def test_listings_in_an_unknown_app_say_so(api, rpc):
    response = api.call(rpc, user_app_id=r.UserAppIDSet(user_id="admin", app_id="ghost"))
    assert response.status.code == sc.CONN_DOES_NOT_EXIST
    assert "app 'ghost' not found" in response.status.description


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
