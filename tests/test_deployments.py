"""Deployments over the V2 API: references, autoscale rules, one per model per nodepool."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from clarifai_grpc.grpc.api import resources_pb2 as r
from clarifai_grpc.grpc.api.status import status_code_pb2 as sc

from orchard.services import models as model_service
from orchard.services.deployments import version_problem
from orchard.store.models import ModelVersionRow
from orchard.testing import ServerThread
from tests.conftest import Api
from tests.resources import (
    deployment,
    make_cluster,
    make_deployment,
    make_model,
    make_nodepool,
    make_stack,
    ok,
)


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
        (
            {"autoscale_config": {"max_replicas": 4_000_000_000}},
            sc.DEPLOYMENT_INVALID_ARGUMENT,
            "deployments[0].autoscale_config.max_replicas: Input should be less than or equal "
            "to 1000 (got 4000000000)",
        ),
        (
            {"description": "x" * (8 << 20)},
            sc.DEPLOYMENT_INVALID_ARGUMENT,
            "deployments[0].description: String should have at most 512 characters (got 8388608)",
        ),
        (
            {"model": "m" * 65},
            sc.DEPLOYMENT_INVALID_ARGUMENT,
            "deployments[0].worker.model.id: String should have at most 64 characters (got 65)",
        ),
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


# -- versions the orchestrator cannot run ----------------------------------------------------

DIGEST = "0" * 64


def version(status: int, digest: str = "", description: str = "") -> ModelVersionRow:
    return ModelVersionRow(
        id="v1",
        model_id="m",
        status_code=status,
        package_digest=digest,
        status_description=description,
    )


VERSIONS = {
    "uploaded and built": (version(sc.MODEL_TRAINED, DIGEST), True, ""),
    "uploaded, building": (version(sc.MODEL_BUILDING, DIGEST), True, ""),
    "uploading": (version(sc.MODEL_UPLOADING), True, ""),
    "made without an upload": (
        version(sc.MODEL_TRAINED),
        True,
        "version 'v1' of model 'm' was made without an upload (it has no package), so Orchard "
        "cannot start replicas of it; upload the model with `orchard model upload` and deploy "
        "that version, or deploy this one to a local-dev cluster and serve it with "
        "`orchard model serve`",
    ),
    "build failed": (
        version(sc.MODEL_BUILDING_FAILED, DIGEST, "build failed: no wheel"),
        True,
        "version 'v1' of model 'm' failed to upload or build (build failed: no wheel); upload "
        "the model again with `orchard model upload` and deploy the new version",
    ),
    "upload failed": (version(sc.MODEL_UPLOADING_FAILED), True, "failed to upload or build"),
    "made without an upload, runners by hand": (version(sc.MODEL_TRAINED), False, ""),
    "build failed, runners by hand": (version(sc.MODEL_BUILDING_FAILED, DIGEST), False, ""),
}


@pytest.mark.parametrize(("row", "orchestrated", "problem"), VERSIONS.values(), ids=VERSIONS.keys())
def test_version_problem(row: ModelVersionRow, orchestrated: bool, problem: str) -> None:
    found = version_problem(row, orchestrated)
    assert problem in found if problem else found == ""
    assert bool(found) == bool(problem)


@pytest.fixture
def orchestrating(tmp_path: Path) -> Iterator[tuple[ServerThread, Api]]:
    """A server that runs replicas in its dedicated clusters' nodepools."""
    with ServerThread(tmp_path / "home", offline=True, orchestrate=True) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        try:
            yield server, Api(channel, server.pat, server.user_id)
        finally:
            channel.close()


def uploaded_version(server: ServerThread, model_id: str = "m") -> str:
    """A version as an upload leaves it (its package is not on disk: nothing here runs it)."""
    assert server.server is not None
    with server.server.store.session() as session:
        model = model_service.get_model(session, server.user_id, "app", model_id)
        return str(model_service.create_model_version(session, model, {}).id)


def set_digest(server: ServerThread, version_id: str) -> None:
    assert server.server is not None
    with server.server.store.session() as session:
        model = model_service.get_model(session, server.user_id, "app", "m")
        model_service.get_model_version(session, model, version_id).package_digest = DIGEST


def local_dev_pool(api: Api) -> list[dict[str, Any]]:
    make_cluster(api, "dev", cluster_type="local-dev")
    make_nodepool(api, "dev", "devnp")
    return [{"id": "devnp", "compute_cluster": {"id": "dev"}}]


def test_an_orchestrated_nodepool_refuses_a_version_made_without_an_upload(
    orchestrating: tuple[ServerThread, Api],
) -> None:
    _, api = orchestrating
    packageless = make_stack(api)
    named = api.call("PostDeployments", deployments=[deployment("dep", version=packageless)])
    assert named.status.code == sc.DEPLOYMENT_INVALID_ARGUMENT
    assert named.status.description.startswith(
        f"deployments[0].worker.model.model_version.id: version '{packageless}' of model 'm' "
        "was made without an upload"
    )
    latest = api.call("PostDeployments", deployments=[deployment("dep")])
    assert latest.status.code == sc.DEPLOYMENT_INVALID_ARGUMENT
    assert "model 'm' has no version Orchard can start replicas of" in latest.status.description
    assert ok(api.call("ListDeployments")).deployments == []
    # a local-dev cluster's runners are attached by hand: the local runner serves such versions
    dev = make_deployment(api, "dev", nodepools=local_dev_pool(api))
    assert dev.worker.model.model_version.id == packageless


def test_latest_version_is_the_newest_that_can_run_there(
    orchestrating: tuple[ServerThread, Api],
) -> None:
    server, api = orchestrating
    make_stack(api)
    uploaded = uploaded_version(server)
    set_digest(server, uploaded)
    newest = ok(
        api.call(
            "PostModelVersions",
            user_app_id=r.UserAppIDSet(user_id=api.user_id, app_id="app"),
            model_id="m",
            model_versions=[r.ModelVersion()],
        )
    ).model.model_version.id
    assert make_deployment(api, "dep").worker.model.model_version.id == uploaded
    dev = make_deployment(api, "dev", nodepools=local_dev_pool(api))
    assert dev.worker.model.model_version.id == newest


def test_a_move_to_an_orchestrated_nodepool_is_checked_and_other_edits_pass(
    orchestrating: tuple[ServerThread, Api],
) -> None:
    _, api = orchestrating
    packageless = make_stack(api)
    make_deployment(api, "dev", nodepools=local_dev_pool(api))
    move = r.Deployment(id="dev")
    move.nodepools.add(id="np", compute_cluster=r.ComputeCluster(id="cc"))
    moved = api.call("PatchDeployments", action="overwrite", deployments=[move])
    assert moved.status.code == sc.DEPLOYMENT_INVALID_ARGUMENT
    assert f"version '{packageless}' of model 'm' was made without an upload" in (
        moved.status.description
    )
    scale = r.Deployment(id="dev", autoscale_config=r.AutoscaleConfig(max_replicas=3))
    ok(api.call("PatchDeployments", action="overwrite", deployments=[scale]))
