"""Runner rows over the V2 API: the ones Orchard makes for deployments go with them."""

from __future__ import annotations

from typing import Any

from clarifai_grpc.grpc.api import resources_pb2 as r
from clarifai_grpc.grpc.api.status import status_code_pb2 as sc
from google.protobuf import json_format

from orchard.configs import RunnerSpec
from orchard.services import nodepools, runners
from orchard.testing import ServerThread
from tests.resources import make_deployment, make_stack, ok


def runner(**fields: Any) -> r.Runner:
    data = {"worker": {"model": {"id": "m", "app_id": "app"}}} | fields
    return json_format.ParseDict(data, r.Runner())


def managed_runner(server: ServerThread, deployment_id: str) -> str:
    """A runner row as the orchestrator makes it for ``deployment_id`` in cc/np."""
    assert server.server is not None
    with server.server.store.session() as session:
        pool = nodepools.find_nodepool(session, server.user_id, "cc", "np")
        spec = RunnerSpec.model_validate(
            {
                "metadata": {runners.MANAGED: deployment_id},
                "worker": {"model": {"id": "m", "app_id": "app"}},
                "num_replicas": 0,
            }
        )
        row = runners.create_runner(session, pool, spec, "test", orchestrator=True)
        return row.id


def test_a_runner_orchard_runs_for_a_deployment_cannot_be_deleted(server, api):
    make_stack(api)
    make_deployment(api, "dep")
    made = managed_runner(server, "dep")
    own = ok(
        api.call("PostRunners", compute_cluster_id="cc", nodepool_id="np", runners=[runner()])
    ).runners[0]
    refused = api.call("DeleteRunners", ids=[own.id, made])
    assert refused.status.code == sc.RUNNER_INVALID_REQUEST
    assert refused.status.description == (
        f"runner {made!r} is run by Orchard for deployment 'dep', and goes with it: scale the "
        "deployment (PatchDeployments, autoscale_config) or delete it (`orchard deployment "
        "delete dep`); nothing was deleted"
    )
    listed = {x.id for x in ok(api.call("ListRunners")).runners}
    assert listed == {own.id, made}
    ok(api.call("DeleteRunners", ids=[own.id]))  # a runner made by hand goes


def test_a_user_cannot_mark_a_runner_as_orchards(api):
    make_stack(api)
    response = api.call(
        "PostRunners",
        compute_cluster_id="cc",
        nodepool_id="np",
        runners=[runner(metadata={runners.MANAGED: "dep"})],
    )
    assert response.status.code == sc.RUNNER_INVALID_ARGUMENT
    assert "runners[0].metadata: the key 'orchard.deployment' is reserved" in (
        response.status.description
    )
    assert ok(api.call("ListRunners")).runners == []
