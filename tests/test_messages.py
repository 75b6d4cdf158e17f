"""Error texts name the fix in words users of either CLI understand: Orchard's command and the
official `clarifai` one (they share their shapes), or an SDK method both SDKs have."""

from __future__ import annotations

from clarifai_grpc.grpc.api import resources_pb2 as r

from orchard import wire
from tests.resources import cluster, deployment, make_deployment, make_stack, nodepool

UID = r.UserAppIDSet(user_id="admin", app_id="app")


def _description(api, rpc: str, **fields) -> str:
    return str(api.call(rpc, **fields).status.description)


def test_not_found_names_the_listing_in_both_clis(api):
    make_stack(api)
    cases = {
        "`orchard deployment list` (or `clarifai deployment list`)": (
            "GetDeployment",
            {"deployment_id": "x"},
        ),
        "`orchard computecluster list` (or `clarifai computecluster list`)": (
            "GetComputeCluster",
            {"compute_cluster_id": "x"},
        ),
        "`orchard nodepool list cc` (or `clarifai nodepool list cc`)": (
            "GetNodepool",
            {"compute_cluster_id": "cc", "nodepool_id": "x"},
        ),
        "`orchard model upload PATH` (or `clarifai model upload PATH`)": (
            "GetModel",
            {"user_app_id": UID, "model_id": "x"},
        ),
        "Model.list_versions() (in either SDK)": (
            "GetModelVersion",
            {"user_app_id": UID, "model_id": "m", "version_id": "x"},
        ),
        "Nodepool.list_runners() (in either SDK)": ("GetRunner", {"runner_id": "x"}),
        "User.create_app (in either SDK)": (
            "GetApp",
            {"user_app_id": r.UserAppIDSet(user_id="admin", app_id="x")},
        ),
    }
    for hint, (rpc, fields) in cases.items():
        assert hint in _description(api, rpc, **fields), rpc


def test_conflicts_name_the_delete_in_both_clis(api):
    version = make_stack(api)
    make_deployment(api, "dep", version=version)
    cases = {
        "`orchard deployment delete dep` (or `clarifai deployment delete dep`)": (
            "PostDeployments",
            {"deployments": [deployment("dep", version=version)]},
        ),
        "`orchard computecluster delete cc` (or `clarifai computecluster delete cc`)": (
            "PostComputeClusters",
            {"compute_clusters": [cluster("cc")]},
        ),
        "`orchard nodepool delete cc np` (or `clarifai nodepool delete cc np`)": (
            "PostNodepools",
            {"compute_cluster_id": "cc", "nodepools": [nodepool("np")]},
        ),
    }
    for hint, (rpc, fields) in cases.items():
        assert hint in _description(api, rpc, **fields), rpc


def test_missing_credentials_name_both_logins(api):
    anonymous = wire.callable_for(api.channel, "ListApps")(
        wire.request_class("ListApps")(), timeout=30
    )
    description = anonymous.status.description
    assert "CLARIFAI_PAT" in description and "`clarifai login`" in description
