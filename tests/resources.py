"""Builders for resources over the raw API, used by the server tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clarifai_grpc.grpc.api import resources_pb2 as r
from clarifai_grpc.grpc.api.status import status_code_pb2
from google.protobuf import json_format

from orchard.cli.runner import version_files
from orchard.client.uploads import upload_model
from orchard.client.user import User

SUCCESS = status_code_pb2.SUCCESS
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "models"
# The examples that build offline from uv's cache and that the official SDK uploads: all but
# resnet50, whose torch test_resnet50 installs from the CPU wheel on disk, and whose dynamic
# batching the official ModelClass does not have, and tiny-chat, which answers through the
# hooks of Orchard's OpenAIModelClass (the official one only forwards to a backend).
LIGHT_EXAMPLES = sorted(
    p
    for p in EXAMPLES.iterdir()
    if (p / "config.yaml").exists() and p.name not in ("resnet50", "tiny-chat")
)


def ok(response: Any) -> Any:
    assert response.status.code == SUCCESS, response.status
    return response


def cluster(id: str = "cc", **fields: Any) -> r.ComputeCluster:
    data = {
        "id": id,
        "cloud_provider": {"id": "local"},
        "region": "local",
        "cluster_type": "dedicated",
        "managed_by": "user",
    } | fields
    return json_format.ParseDict(data, r.ComputeCluster())


def nodepool(id: str = "np", **fields: Any) -> r.Nodepool:
    data = {
        "id": id,
        "instance_types": [{"id": "local-cpu-1"}],
        "node_capacity_type": {"capacity_types": [1]},
        "min_instances": 0,
        "max_instances": 2,
    } | fields
    return json_format.ParseDict(data, r.Nodepool())


def deployment(
    id: str = "dep", model: str = "m", version: str = "", nodepools: Any = None, **fields: Any
) -> r.Deployment:
    data = {
        "id": id,
        "worker": {"model": {"id": model, "app_id": "app", "model_version": {"id": version}}},
        "scheduling_choice": 4,
        "nodepools": nodepools
        if nodepools is not None
        else [{"id": "np", "compute_cluster": {"id": "cc"}}],
        "autoscale_config": {"min_replicas": 0, "max_replicas": 2},
    } | fields
    return json_format.ParseDict(data, r.Deployment())


def make_cluster(api: Any, id: str = "cc", **fields: Any) -> r.ComputeCluster:
    return ok(
        api.call("PostComputeClusters", compute_clusters=[cluster(id, **fields)])
    ).compute_clusters[0]


def make_nodepool(api: Any, cc: str = "cc", id: str = "np", **fields: Any) -> r.Nodepool:
    return ok(
        api.call("PostNodepools", compute_cluster_id=cc, nodepools=[nodepool(id, **fields)])
    ).nodepools[0]


def make_model(api: Any, model: str = "m", app: str = "app") -> str:
    """An app, a model and one version; returns the version id."""
    if (
        api.call("GetApp", user_app_id=r.UserAppIDSet(user_id=api.user_id, app_id=app)).status.code
        != SUCCESS
    ):
        ok(api.call("PostApps", apps=[r.App(id=app)]))
    uid = r.UserAppIDSet(user_id=api.user_id, app_id=app)
    ok(api.call("PostModels", user_app_id=uid, models=[r.Model(id=model)]))
    response = ok(
        api.call(
            "PostModelVersions", user_app_id=uid, model_id=model, model_versions=[r.ModelVersion()]
        )
    )
    return str(response.model.model_version.id)


def make_stack(api: Any) -> str:
    """Cluster cc, nodepool np, model m with a version; returns the version id."""
    make_cluster(api)
    make_nodepool(api)
    return make_model(api)


def make_runner(api: Any, model: str = "m", app: str = "app") -> r.Runner:
    """A runner record of ``model`` in cc/np (replicas attached by hand serve under its id)."""
    return ok(
        api.call(
            "PostRunners",
            compute_cluster_id="cc",
            nodepool_id="np",
            runners=[r.Runner(worker=r.Worker(model=r.Model(id=model, app_id=app)))],
        )
    ).runners[0]


def make_deployment(api: Any, id: str = "dep", **fields: Any) -> r.Deployment:
    return ok(api.call("PostDeployments", deployments=[deployment(id, **fields)])).deployments[0]


def deploy(server, api, example: str, dep_id: str) -> tuple[str, Path, Path]:
    """Upload an example, deploy it into cc/np, make a runner; (runner id, package, python)."""
    version = upload_model(
        EXAMPLES / example, user_id=server.user_id, base_url=server.base_url, pat=server.pat
    )
    model_id = {"echo": "echo", "token-streamer": "token-streamer"}[example]
    ok(
        api.call(
            "PostDeployments",
            deployments=[
                r.Deployment(
                    id=dep_id,
                    worker=r.Worker(
                        model=r.Model(
                            id=model_id,
                            app_id="examples",
                            model_version=r.ModelVersion(id=version.id),
                        )
                    ),
                    nodepools=[r.Nodepool(id="np", compute_cluster=r.ComputeCluster(id="cc"))],
                    scheduling_choice=4,
                    autoscale_config=r.AutoscaleConfig(max_replicas=2),
                )
            ],
        )
    )
    runner = ok(
        api.call(
            "PostRunners",
            compute_cluster_id="cc",
            nodepool_id="np",
            runners=[
                r.Runner(
                    worker=r.Worker(
                        model=r.Model(
                            id=model_id,
                            app_id="examples",
                            model_version=r.ModelVersion(id=version.id),
                        )
                    )
                )
            ],
        )
    ).runners[0]
    user = User(user_id=server.user_id, base_url=server.base_url, pat=server.pat)
    model = r.Model(id=model_id, app_id="examples", model_version=r.ModelVersion(id=version.id))
    package, python = version_files(user, model, server.settings.home)
    return runner.id, package, python
