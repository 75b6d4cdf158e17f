"""The seed's Python flow through Orchard's SDK, with only the import lines changed."""

from __future__ import annotations

import pytest

from orchard import errors
from orchard.client.compute_cluster import ComputeCluster
from orchard.client.deployment import Deployment
from orchard.client.nodepool import Nodepool
from orchard.client.user import User

CLUSTER = {
    "compute_cluster": {
        "cloud_provider": {"id": "local"},
        "region": "local",
        "managed_by": "user",
        "cluster_type": "dedicated",
    }
}
NODEPOOL = {
    "nodepool": {
        "instance_types": [{"id": "local-cpu-1"}],
        "node_capacity_type": {"capacity_types": [1]},
        "min_instances": 0,
        "max_instances": 1,
    }
}


def test_seed_flow(server, tmp_path):
    base, pat, uid = server.base_url, server.pat, server.user_id
    cluster_yaml = tmp_path / "cluster.yaml"
    cluster_yaml.write_text(
        "compute_cluster:\n  cloud_provider: {id: local}\n  region: local\n"
        "  managed_by: user\n  cluster_type: dedicated\n"
    )
    user = User(user_id=uid, base_url=base, pat=pat)
    user.create_compute_cluster(compute_cluster_id="cc", config_filepath=str(cluster_yaml))
    compute_cluster = ComputeCluster(user_id=uid, compute_cluster_id="cc", base_url=base, pat=pat)
    compute_cluster.create_nodepool(nodepool_id="np", nodepool_config=NODEPOOL)

    model = user.create_app("app").create_model("m")
    version = model.create_version(description="v1")
    assert [v.id for v in model.list_versions()] == [version.id]

    nodepool = Nodepool(user_id=uid, nodepool_id="np", base_url=base, pat=pat)
    nodepool.create_deployment(
        deployment_id="dep",
        deployment_config={
            "deployment": {
                "worker": {
                    "model": {
                        "id": "m",
                        "app_id": "app",
                        "user_id": uid,
                        "model_version": {"id": version.id},
                    }
                },
                "scheduling_choice": 4,
                "nodepools": [{"id": "np", "compute_cluster": {"id": "cc", "user_id": uid}}],
                "autoscale_config": {"min_replicas": 0, "max_replicas": 1},
            }
        },
    )
    deployment = Deployment(user_id=uid, deployment_id="dep", base_url=base, pat=pat)
    assert deployment.worker.model.model_version.id == version.id
    assert [d.id for d in nodepool.list_deployments()] == ["dep"]
    assert [c.id for c in user.list_compute_clusters()] == ["cc"]
    assert compute_cluster.nodepool("np").max_instances == 1

    removed = user.delete_compute_clusters(["cc"])
    assert "deployments deleted (no nodepool left): dep" in removed.details
    with pytest.raises(errors.DeploymentNotFound, match="orchard deployment list"):
        nodepool.deployment("dep")


def test_sdk_validates_before_sending(server, tmp_path):
    user = User(user_id=server.user_id, base_url=server.base_url, pat=server.pat)
    with pytest.raises(errors.ComputeClusterInvalid, match=r"compute_cluster\.regon: unknown"):
        user.create_compute_cluster(
            compute_cluster_id="cc",
            compute_cluster_config={
                "compute_cluster": {"cloud_provider": {"id": "local"}, "regon": "local"}
            },
        )
    assert list(user.list_compute_clusters()) == []
