"""`orchard model serve PATH` (alias `local-runner`): serve a model folder from this Python.

The seed system's local-runner flow: get or create the compute cluster
``local-runner-compute-cluster`` (``cluster_type: local-dev``, not orchestrated), its nodepool
``local-runner-nodepool``, the package's app and model, a model version with the folder's
method signatures (reused while they are unchanged), a runner, and the deployment
``local-{model_id}`` pinned to that version; then run one replica of the folder in this very
environment until Ctrl-C. ``--clean`` removes the deployment, runner, version and model on
exit.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click
from clarifai_grpc.grpc.api import resources_pb2
from google.protobuf import json_format

from orchard import errors
from orchard.cli import output
from orchard.cli.common import CliState, pass_state
from orchard.cli.runner import ensure_runner, replica_command, run_replicas
from orchard.client.model import Model
from orchard.client.nodepool import Nodepool
from orchard.client.uploads import ensure_model
from orchard.client.user import User
from orchard.packaging.inspect import run_inspection
from orchard.packaging.package import Package, load_package

CLUSTER = "local-runner-compute-cluster"
NODEPOOL = "local-runner-nodepool"


def ensure_cluster_and_nodepool(user: User) -> Any:
    try:
        cluster = user.compute_cluster(CLUSTER)
    except errors.ComputeClusterNotFound:
        cluster = user.create_compute_cluster(
            compute_cluster_id=CLUSTER,
            compute_cluster_config={
                "cloud_provider": {"id": "local"},
                "region": "na",
                "managed_by": "user",
                "cluster_type": "local-dev",
                "visibility": {"gettable": 10},
            },
        )
    try:
        return cluster.nodepool(NODEPOOL).proto
    except errors.NodepoolNotFound:
        biggest = user.list_instance_types("local", "na")[-1].id
        return cluster.create_nodepool(
            nodepool_id=NODEPOOL,
            nodepool_config={
                "instance_types": [{"id": biggest}],
                "node_capacity_type": {"capacity_types": [1]},
                "min_instances": 1,
                "max_instances": 1,
            },
        ).proto


def ensure_version(user: User, package: Package, signatures: list[dict[str, Any]]) -> Any:
    """The model's newest version if it has these signatures, else a new one."""
    cfg = package.config.model
    model = Model(model_id=cfg.id, app_id=cfg.app_id, _client=user).refresh()
    wanted = resources_pb2.ModelVersion()
    for signature in signatures:
        json_format.ParseDict(signature, wanted.method_signatures.add())
    latest = model.proto.model_version
    if latest.id and list(latest.method_signatures) == list(wanted.method_signatures):
        return latest
    return model.create_version(
        description="local runner",
        pretrained_model_config={"local_dev": True},
        method_signatures=list(wanted.method_signatures),
    )


def ensure_deployment(user: User, package: Package, version: Any, nodepool: Any) -> Any:
    cfg = package.config.model
    dep_id = f"local-{cfg.id}"
    worker = {
        "model": {
            "id": cfg.id,
            "app_id": cfg.app_id,
            "user_id": user.user_id,
            "model_version": {"id": version.id},
        }
    }
    try:
        return user.deployment(dep_id).update(desired_worker=worker).proto
    except errors.DeploymentNotFound:
        pool = Nodepool(nodepool.id, compute_cluster_id=nodepool.compute_cluster.id, _client=user)
        config = {
            "worker": worker,
            "scheduling_choice": 3,
            "deploy_latest_version": False,
            "nodepools": [
                {
                    "id": nodepool.id,
                    "compute_cluster": {"id": nodepool.compute_cluster.id, "user_id": user.user_id},
                }
            ],
            "autoscale_config": {"min_replicas": 1, "max_replicas": 1},
        }
        return pool.create_deployment(deployment_id=dep_id, deployment_config=config).proto


def clean_up(
    user: User, package: Package, deployment: Any, runner_id: str, nodepool: Any, version: Any
) -> None:
    cfg = package.config.model
    user.delete_deployments([deployment.id])
    Nodepool(
        nodepool.id, compute_cluster_id=nodepool.compute_cluster.id, _client=user
    ).delete_runners([runner_id])
    user.app(cfg.app_id).delete_model(cfg.id)
    output.say(
        f"Removed deployment '{deployment.id}', runner {runner_id}, version "
        f"{version.id} and model '{cfg.id}'."
    )


@click.command("serve")
@click.argument("model_path", default=".", type=click.Path(path_type=Path))
@click.option(
    "--concurrency",
    type=click.IntRange(1, 1024),
    default=None,
    help="Items the replica runs at once (default: the model's num_threads).",
)
@click.option("--clean", is_flag=True, help="Remove what this command made when it stops.")
@pass_state
def model_serve(state: CliState, model_path: Path, concurrency: int | None, clean: bool) -> None:
    """Serve the model folder MODEL_PATH from this environment until Ctrl-C."""
    package = load_package(model_path)
    signatures = run_inspection(sys.executable, package.root, stub_missing=False)
    user = state.user()
    nodepool = ensure_cluster_and_nodepool(user)
    ensure_model(user, package)
    version = ensure_version(user, package, signatures or [])
    deployment = ensure_deployment(user, package, version, nodepool)
    runner_id = ensure_runner(user, deployment, nodepool)
    command = replica_command(
        sys.executable,
        package.root,
        user,
        runner_id,
        nodepool,
        f"{os.uname().nodename}-{os.getpid()}",
        concurrency,
    )
    output.say(
        f"Serving '{package.config.model.id}' as deployment '{deployment.id}' "
        f"(version {version.id}); Ctrl-C stops it."
    )
    code = run_replicas([command], user.pat)
    if clean:
        clean_up(user, package, deployment, runner_id, nodepool, version)
    sys.exit(code)
