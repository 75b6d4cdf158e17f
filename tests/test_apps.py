"""Apps over the V2 API: edits, and the empty listings of what Orchard does not keep."""

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
