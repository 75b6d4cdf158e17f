"""Models, versions and model types over the V2 API: what the official SDK reads, edits and
deletes, and the rule that what a deployment serves cannot be deleted from under it."""

from __future__ import annotations

import pytest
from clarifai_grpc.grpc.api import resources_pb2 as r
from clarifai_grpc.grpc.api.status import status_code_pb2 as sc

from tests.resources import make_deployment, make_model, make_stack, ok

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


@pytest.mark.parametrize(
    ("rpc", "request_fields"),
    [
        ("DeleteModel", {"model_id": "m"}),
        ("DeleteModels", {"ids": ["m"]}),
        ("DeleteModelVersion", {"model_id": "m", "version_id": None}),
        ("DeleteApp", {}),
    ],
)
def test_deleting_what_a_deployment_serves_is_refused_naming_it(api, rpc, request_fields):
    version = make_stack(api)
    make_deployment(api, "dep", version=version)
    fields = {k: version if v is None else v for k, v in request_fields.items()}
    response = api.call(rpc, user_app_id=UID, **fields)
    assert response.status.code in (sc.MODEL_INVALID_REQUEST, sc.CONN_INVALID_REQUEST)
    assert "served by deployment(s) 'dep'" in response.status.description
    assert "`clarifai deployment delete ID`" in response.status.description
    assert _versions(api) == [version]  # nothing was deleted
    ok(api.call("DeleteDeployments", ids=["dep"]))
    ok(api.call(rpc, user_app_id=UID, **fields))  # free once the deployment is gone


def test_a_version_no_deployment_serves_can_go(api):
    old = make_stack(api)
    new = ok(
        api.call(
            "PostModelVersions", user_app_id=UID, model_id="m", model_versions=[r.ModelVersion()]
        )
    ).model.model_version.id
    make_deployment(api, "dep", version=new)
    ok(api.call("DeleteModelVersion", user_app_id=UID, model_id="m", version_id=old))
    assert _versions(api) == [new]
    gone = api.call("DeleteModelVersion", user_app_id=UID, model_id="m", version_id=old)
    assert gone.status.code == sc.MODEL_DOES_NOT_EXIST


def test_delete_models_removes_all_named_or_none(api):
    make_model(api, "a")
    make_model(api, "b")
    missing = api.call("DeleteModels", user_app_id=UID, ids=["a", "ghost"])
    assert missing.status.code == sc.MODEL_DOES_NOT_EXIST
    assert [m.id for m in ok(api.call("ListModels", user_app_id=UID)).models] == ["a", "b"]
    done = ok(api.call("DeleteModels", user_app_id=UID, ids=["a", "b"]))
    assert done.status.details == "removed models and their versions: a, b"
    assert ok(api.call("ListModels", user_app_id=UID)).models == []
    make_model(api, "c")
    ok(api.call("DeleteModels", user_app_id=UID, delete_all=True))
    assert ok(api.call("ListModels", user_app_id=UID)).models == []


def test_patch_models_and_versions(api):
    version = make_model(api, "m")
    patched = ok(
        api.call(
            "PatchModels",
            user_app_id=UID,
            models=[r.Model(id="m", description="new", visibility=r.Visibility(gettable=10))],
            action="merge",
        )
    ).models[0]
    assert (patched.description, patched.visibility.gettable) == ("new", 10)
    assert ok(api.call("GetModel", user_app_id=UID, model_id="m")).model.description == "new"
    signature = r.MethodSignature(name="predict", method_type=r.RunnerMethodType.UNARY_UNARY)
    changed = ok(
        api.call(
            "PatchModelVersions",
            user_app_id=UID,
            model_id="m",
            model_versions=[r.ModelVersion(id=version, method_signatures=[signature])],
            action="merge",
        )
    ).model_versions[0]
    assert [s.name for s in changed.method_signatures] == ["predict"]
    got = ok(api.call("GetModelVersion", user_app_id=UID, model_id="m", version_id=version))
    assert [s.name for s in got.model_version.method_signatures] == ["predict"]
    bad = api.call("PatchModels", user_app_id=UID, models=[r.Model(id="m")], action="remove")
    assert bad.status.code == sc.MODEL_INVALID_ARGUMENT
    assert "use one of: overwrite, merge" in bad.status.description


def test_model_types_are_listed_and_fetched(api):
    types = {t.id: t for t in ok(api.call("ListModelTypes")).model_types}
    assert list(types["text-to-text"].input_fields) == ["text"]
    assert list(types["visual-classifier"].input_fields) == ["image"]
    got = ok(api.call("GetModelType", model_type_id="visual-detector")).model_type
    assert list(got.output_fields) == ["regions"]
    unknown = api.call("GetModelType", model_type_id="no-such-type")
    assert unknown.status.code == sc.MODEL_DOES_NOT_EXIST
    assert "text-to-text" in unknown.status.description
