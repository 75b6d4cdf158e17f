"""Deployments over the V2 API: references, autoscale rules, one per model per nodepool."""

from __future__ import annotations

import pytest
from clarifai_grpc.grpc.api.status import status_code_pb2 as sc

from tests.resources import deployment, make_deployment, make_model, make_nodepool, make_stack, ok


def test_create_get_list_delete(api):
    version = make_stack(api)
    created = make_deployment(api, "dep")
    assert created.worker.model.model_version.id == version  # latest version when none named
    assert created.autoscale_config.max_replicas == 2
    assert created.autoscale_config.scale_to_zero_delay_seconds == 1800  # default filled in
    assert [n.id for n in created.nodepools] == ["np"]
    got = ok(api.call("GetDeployment", deployment_id="dep")).deployment
    assert got.worker == created.worker
    assert [d.id for d in ok(api.call("ListDeployments", nodepool_id="np")).deployments] == ["dep"]
    assert ok(api.call("ListDeployments", nodepool_id="other")).deployments == []
    assert [
        d.id for d in ok(api.call("ListDeployments", model_version_ids=[version])).deployments
    ] == ["dep"]
    deleted = ok(api.call("DeleteDeployments", ids=["dep"]))
    assert deleted.status.details == "removed deployments: dep"
    assert api.call("GetDeployment", deployment_id="dep").status.code == (
        sc.DEPLOYMENT_DOES_NOT_EXIST
    )


def test_one_deployment_per_model_per_nodepool(api):
    make_stack(api)
    make_deployment(api, "first")
    second = api.call("PostDeployments", deployments=[deployment("second")])
    assert second.status.code == sc.DEPLOYMENT_INVALID_REQUEST
    assert "nodepool 'np' already has deployment 'first' of model 'm'" in (
        second.status.description
    )
    make_model(api, "other-model")
    make_deployment(api, "other", model="other-model")  # another model may share the pool


@pytest.mark.parametrize(
    ("fields", "code", "text"),
    [
        ({"model": "ghost"}, sc.MODEL_DOES_NOT_EXIST, "model 'ghost' not found"),
        ({"version": "0" * 32}, sc.MODEL_DOES_NOT_EXIST, "version '" + "0" * 32),
        (
            {"nodepools": [{"id": "ghost", "compute_cluster": {"id": "cc"}}]},
            sc.NODEPOOL_DOES_NOT_EXIST,
            "nodepool 'ghost' not found",
        ),
        (
            {"nodepools": []},
            sc.DEPLOYMENT_INVALID_ARGUMENT,
            "a deployment needs at least one nodepool",
        ),
        (
            {"autoscale_config": {"min_replicas": 4, "max_replicas": 2}},
            sc.DEPLOYMENT_INVALID_ARGUMENT,
            "min_replicas (4) is greater than max_replicas (2)",
        ),
        (
            {
                "autoscale_config": {
                    "scale_down_delay_seconds": 600,
                    "scale_to_zero_delay_seconds": 60,
                }
            },
            sc.DEPLOYMENT_INVALID_ARGUMENT,
            "scale_to_zero_delay_seconds (60) is less than scale_down_delay_seconds (600)",
        ),
        (
            {"deployment_nodepools": [{"id": "np", "compute_cluster": {"id": "cc"}}]},
            sc.DEPLOYMENT_INVALID_ARGUMENT,
            "set either nodepools or deployment_nodepools",
        ),
        (
            {
                "nodepools": [
                    {"id": "np", "compute_cluster": {"id": "cc"}},
                    {"id": "np", "compute_cluster": {"id": "cc"}},
                ]
            },
            sc.DEPLOYMENT_INVALID_ARGUMENT,
            "nodepool 'np' is listed twice",
        ),
        (
            {"worker": {"workflow": {"id": "wf"}}},
            sc.DEPLOYMENT_INVALID_ARGUMENT,
            "Orchard deploys models only",
        ),
        ({"id": "bad id"}, sc.DEPLOYMENT_INVALID_ARGUMENT, "is not a valid id"),
    ],
)
def test_invalid_deployments_are_refused_and_write_nothing(api, fields, code, text):
    make_stack(api)
    dep_id = fields.pop("id", "dep")
    response = api.call("PostDeployments", deployments=[deployment(dep_id, **fields)])
    assert response.status.code == code, response.status
    assert text in response.status.description
    assert ok(api.call("ListDeployments")).deployments == []


def test_deployment_nodepools_with_priority(api):
    make_stack(api)
    make_nodepool(api, id="np2")
    created = ok(
        api.call(
            "PostDeployments",
            deployments=[
                deployment(
                    "dep",
                    nodepools=[],
                    deployment_nodepools=[
                        {"nodepool": {"id": "np", "compute_cluster": {"id": "cc"}}, "priority": 9},
                        {"id": "np2", "compute_cluster": {"id": "cc"}, "priority": 1},
                    ],
                )
            ],
        )
    ).deployments[0]
    assert [(d.id, d.priority) for d in created.deployment_nodepools] == [("np", 9), ("np2", 1)]


def test_patch_overwrite_desired_worker_and_disable(api):
    first = make_stack(api)
    make_deployment(api, "dep", version=first)
    from clarifai_grpc.grpc.api import resources_pb2 as r

    uid = r.UserAppIDSet(user_id=api.user_id, app_id="app")
    second = ok(
        api.call(
            "PostModelVersions", user_app_id=uid, model_id="m", model_versions=[r.ModelVersion()]
        )
    ).model.model_version.id
    change = r.Deployment(id="dep", status=r.Deployment.Status.DISABLED)
    change.desired_worker.model.id = "m"
    change.desired_worker.model.app_id = "app"
    change.desired_worker.model.model_version.id = second
    patched = ok(api.call("PatchDeployments", action="overwrite", deployments=[change]))
    dep = patched.deployments[0]
    assert dep.worker.model.model_version.id == second
    assert dep.status == r.Deployment.Status.DISABLED
    assert [n.id for n in dep.nodepools] == ["np"]  # untouched fields are kept
