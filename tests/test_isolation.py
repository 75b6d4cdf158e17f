"""Cross-user isolation on every RPC Orchard serves: a second user's PAT can neither read,
list, change, delete nor deploy into the first user's resources, and learns nothing from
trying (the answers are "does not exist")."""

from __future__ import annotations

import pytest
from clarifai_grpc.grpc.api import resources_pb2 as r
from clarifai_grpc.grpc.api.status import status_code_pb2 as sc

from orchard.server.app import build_router
from tests.resources import cluster, deployment, make_deployment, make_stack, nodepool, ok

NOT_FOUND = {
    sc.CONN_DOES_NOT_EXIST,
    sc.COMPUTE_CLUSTER_DOES_NOT_EXIST,
    sc.NODEPOOL_DOES_NOT_EXIST,
    sc.DEPLOYMENT_DOES_NOT_EXIST,
    sc.MODEL_DOES_NOT_EXIST,
    sc.CONN_KEY_NOT_FOUND,
}


def _attacks(owner: str, version: str) -> dict[str, dict]:
    """For each RPC, a request by another user aimed at ``owner``'s resources."""
    uid = r.UserAppIDSet(user_id=owner, app_id="app")
    return {
        "GetUser": {"user_app_id": uid},
        "ListApps": {"user_app_id": uid},
        "GetApp": {"user_app_id": uid},
        "PostApps": {"user_app_id": uid, "apps": [r.App(id="x")]},
        "DeleteApp": {"user_app_id": uid},
        "PatchApp": {"user_app_id": uid, "app": r.App(id="app", description="x")},
        "PatchApps": {"user_app_id": uid, "apps": [r.App(id="app", description="x")]},
        "ListWorkflows": {"user_app_id": uid},
        "ListDatasets": {"user_app_id": uid},
        "ListConcepts": {"user_app_id": uid},
        "ListSecrets": {"user_app_id": uid},
        "ListModels": {"user_app_id": uid},
        "GetModel": {"user_app_id": uid, "model_id": "m"},
        "PostModels": {"user_app_id": uid, "models": [r.Model(id="x")]},
        "DeleteModel": {"user_app_id": uid, "model_id": "m"},
        "DeleteModels": {"user_app_id": uid, "ids": ["m"]},
        "PatchModels": {"user_app_id": uid, "models": [r.Model(id="m", description="x")]},
        "DeleteModelVersion": {"user_app_id": uid, "model_id": "m", "version_id": version},
        "PatchModelVersions": {
            "user_app_id": uid,
            "model_id": "m",
            "model_versions": [r.ModelVersion(id=version, description="x")],
        },
        "PostModelVersions": {"user_app_id": uid, "model_id": "m"},
        "GetModelVersion": {"user_app_id": uid, "model_id": "m", "version_id": version},
        "ListModelVersions": {"user_app_id": uid, "model_id": "m"},
        "ListComputeClusters": {"user_app_id": uid},
        "GetComputeCluster": {"user_app_id": uid, "compute_cluster_id": "cc"},
        "PostComputeClusters": {"user_app_id": uid, "compute_clusters": [cluster("x")]},
        "PatchComputeClusters": {"user_app_id": uid, "compute_clusters": [cluster("cc")]},
        "DeleteComputeClusters": {"user_app_id": uid, "ids": ["cc"]},
        "ListNodepools": {"user_app_id": uid, "compute_cluster_id": "cc"},
        "GetNodepool": {"user_app_id": uid, "compute_cluster_id": "cc", "nodepool_id": "np"},
        "PostNodepools": {
            "user_app_id": uid,
            "compute_cluster_id": "cc",
            "nodepools": [nodepool("x")],
        },
        "PatchNodepools": {
            "user_app_id": uid,
            "compute_cluster_id": "cc",
            "nodepools": [nodepool("np")],
        },
        "DeleteNodepools": {"user_app_id": uid, "compute_cluster_id": "cc", "ids": ["np"]},
        "ListDeployments": {"user_app_id": uid},
        "GetDeployment": {"user_app_id": uid, "deployment_id": "dep"},
        "PostDeployments": {"user_app_id": uid, "deployments": [deployment("x")]},
        "PatchDeployments": {"user_app_id": uid, "deployments": [deployment("dep")]},
        "DeleteDeployments": {"user_app_id": uid, "ids": ["dep"]},
        "ListKeys": {"user_app_id": uid},
        "PostKeys": {"user_app_id": uid, "keys": [r.Key(description="x")]},
        "DeleteKey": {"user_app_id": uid, "key_id": "whatever"},
        "PostRunners": {
            "user_app_id": uid,
            "compute_cluster_id": "cc",
            "nodepool_id": "np",
            "runners": [r.Runner(worker=r.Worker(model=r.Model(id="m", app_id="app")))],
        },
        "GetRunner": {"user_app_id": uid, "runner_id": "whatever"},
        "ListRunners": {"user_app_id": uid},
        "DeleteRunners": {"user_app_id": uid, "ids": ["whatever"]},
        "ListLogEntries": {
            "user_app_id": uid,
            "log_type": "builder",
            "model_id": "m",
            "model_version_id": version,
        },
    }


# Provider catalogue and model type RPCs are not per user; the streaming RPCs are covered where
# they are tested (test_uploads, test_dispatch).
PUBLIC = {
    "ListCloudProviders",
    "ListCloudRegions",
    "ListInstanceTypes",
    "ListModelTypes",
    "GetModelType",
}
STREAMS = {
    "PostModelVersionsUpload",
    "ProcessRunnerItems",
    "PostModelOutputs",
    "GenerateModelOutputs",
    "StreamModelOutputs",
}  # covered in test_uploads/dispatch


def test_every_served_rpc_is_covered():
    assert build_router().served() - PUBLIC - STREAMS == set(_attacks("a", "v"))


@pytest.fixture
def owned(api):
    version = make_stack(api)
    make_deployment(api, "dep", version=version)
    return version


def _snapshot(api):
    return (
        [c.id for c in ok(api.call("ListComputeClusters")).compute_clusters],
        [(n.id, n.max_instances) for n in ok(api.call("ListNodepools")).nodepools],
        [(d.id, list(d.nodepools)) for d in ok(api.call("ListDeployments")).deployments],
        [m.id for m in ok(api.call("ListModels")).models],
        [a.id for a in ok(api.call("ListApps")).apps],
        len(ok(api.call("ListKeys")).keys),
    )


@pytest.mark.parametrize("rpc", sorted(_attacks("a", "v")))
def test_other_user_naming_the_owner_gets_does_not_exist(api, other, owned, rpc):
    before = _snapshot(api)
    response = other.call(rpc, **_attacks(api.user_id, owned)[rpc])
    assert response.status.code in NOT_FOUND, response.status
    assert "not found" in response.status.description
    assert _snapshot(api) == before


@pytest.mark.parametrize(
    "rpc",
    [
        "GetComputeCluster",
        "GetNodepool",
        "GetDeployment",
        "GetModel",
        "GetModelVersion",
        "DeleteComputeClusters",
        "DeleteNodepools",
        "DeleteDeployments",
        "PatchDeployments",
    ],
)
def test_other_user_naming_themselves_finds_nothing(api, other, owned, rpc):
    before = _snapshot(api)
    request = _attacks(other.user_id, owned)[rpc]
    response = other.call(rpc, **request)
    assert response.status.code in NOT_FOUND, response.status
    assert _snapshot(api) == before


def test_other_user_cannot_deploy_into_the_owners_nodepool_or_model(api, other, owned):
    version = make_stack(other)  # bob's own cc/np/m, same ids
    into_admin_pool = deployment(
        "x",
        version=version,
        nodepools=[{"id": "np", "compute_cluster": {"id": "cc", "user_id": api.user_id}}],
    )
    assert other.call("PostDeployments", deployments=[into_admin_pool]).status.code == (
        sc.NODEPOOL_DOES_NOT_EXIST
    )
    admin_model = deployment("y", version=owned)
    admin_model.worker.model.user_id = api.user_id
    assert other.call("PostDeployments", deployments=[admin_model]).status.code == (
        sc.MODEL_DOES_NOT_EXIST
    )
    # bob's own lists show only bob's resources
    assert [d.id for d in ok(other.call("ListDeployments")).deployments] == []


def test_listing_shows_only_own_resources(api, other, owned):
    make_stack(other)
    assert [c.user_id for c in ok(other.call("ListComputeClusters")).compute_clusters] == ["bob"]
    assert [n.compute_cluster.user_id for n in ok(other.call("ListNodepools")).nodepools] == ["bob"]


def test_bad_or_missing_pat(api):
    bad = api.as_user("admin", "not-a-pat").call("ListComputeClusters")
    assert bad.status.code == sc.CONN_KEY_INVALID
    from orchard import wire

    anonymous = wire.callable_for(api.channel, "ListComputeClusters")(
        wire.request_class("ListComputeClusters")(), timeout=30
    )
    assert anonymous.status.code == sc.CONN_KEY_INVALID
    assert "authorization: Key <PAT>" in anonymous.status.description


def test_unimplemented_rpc_says_so(api):
    response = api.call("PostInputs")
    assert response.status.code == sc.NOT_IMPLEMENTED
    assert "PostInputs is not implemented by Orchard" in response.status.description


def test_other_user_cannot_delete_the_owners_pat_by_its_handle(api, other):
    handle = ok(api.call("ListKeys")).keys[0].id
    response = other.call("DeleteKey", key_id=handle)
    assert response.status.code == sc.CONN_KEY_NOT_FOUND
    assert [k.id for k in ok(api.call("ListKeys")).keys] == [handle]
    assert ok(api.call("GetUser")).user.id == api.user_id  # the PAT still works
