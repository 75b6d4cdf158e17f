"""Models and versions over the V2 API: what the official SDK reads."""

from __future__ import annotations

from clarifai_grpc.grpc.api import resources_pb2 as r
from clarifai_grpc.grpc.api.status import status_code_pb2 as sc

from tests.resources import make_model, ok

UID = r.UserAppIDSet(user_id="admin", app_id="app")


def _versions(api, model="m"):
    return [
        v.id
        for v in ok(api.call("ListModelVersions", user_app_id=UID, model_id=model)).model_versions
    ]


def test_list_models_names_each_model(api):
    make_model(api, "m")
    listed = ok(api.call("ListModels", user_app_id=UID)).models
    assert [(m.id, m.name) for m in listed] == [("m", "m")]  # the official listings read name


def test_get_model_version_without_an_id_answers_the_latest(api):
    first = make_model(api, "m")
    second = ok(
        api.call(
            "PostModelVersions", user_app_id=UID, model_id="m", model_versions=[r.ModelVersion()]
        )
    ).model.model_version.id
    latest = ok(api.call("GetModelVersion", user_app_id=UID, model_id="m", version_id=""))
    assert latest.model_version.id == second != first
    named = ok(api.call("GetModelVersion", user_app_id=UID, model_id="m", version_id=first))
    assert named.model_version.id == first


def test_get_model_version_of_a_model_without_versions_says_so(api):
    ok(api.call("PostApps", apps=[r.App(id="app")]))
    ok(api.call("PostModels", user_app_id=UID, models=[r.Model(id="bare")]))
    response = api.call("GetModelVersion", user_app_id=UID, model_id="bare")
    assert response.status.code == sc.MODEL_DOES_NOT_EXIST
    assert "has no version yet" in response.status.description
    assert "`clarifai model upload PATH`" in response.status.description
