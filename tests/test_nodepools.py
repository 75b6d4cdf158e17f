"""Nodepools over the V2 API: CRUD, fitting the host, bounds, cascade to deployments."""

from __future__ import annotations

import pytest
from clarifai_grpc.grpc.api.status import status_code_pb2 as sc

from tests.resources import (
    make_cluster,
    make_deployment,
    make_model,
    make_nodepool,
    make_stack,
    nodepool,
    ok,
)


def test_create_fills_compute_info_from_the_instance_type_catalogue(api):
    make_cluster(api)
    created = make_nodepool(api, min_instances=1, max_instances=3)
    info = created.instance_types[0].compute_info
    assert info.cpu_limit == "1" and info.cpu_memory.endswith("Mi")
    assert (created.min_instances, created.max_instances) == (1, 3)
    assert (created.compute_cluster.id, created.compute_cluster.user_id) == ("cc", "admin")
    got = ok(api.call("GetNodepool", compute_cluster_id="cc", nodepool_id="np")).nodepool
    assert got.instance_types[0].compute_info == info


def test_list_per_cluster_and_across_clusters(api):
    make_cluster(api, "a")
    make_cluster(api, "b")
    make_nodepool(api, cc="a", id="p1")
    make_nodepool(api, cc="b", id="p2")
    assert [n.id for n in ok(api.call("ListNodepools", compute_cluster_id="a")).nodepools] == ["p1"]
    every = ok(api.call("ListNodepools")).nodepools
    assert [(n.compute_cluster.id, n.id) for n in every] == [("a", "p1"), ("b", "p2")]
    missing = api.call("ListNodepools", compute_cluster_id="zzz")
    assert missing.status.code == sc.COMPUTE_CLUSTER_DOES_NOT_EXIST


HOST_CPUS_TOO_MANY = {
    "instance_types": [{"id": "big", "compute_info": {"cpu_limit": "4096", "cpu_memory": "1Gi"}}]
}


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        (
            {"min_instances": 3, "max_instances": 1},
            "nodepools[0]: min_instances (3) is greater than max_instances (1)",
        ),
        (
            HOST_CPUS_TOO_MANY,
            "nodepools[0].instance_types[0].compute_info.cpu_limit: 4096 CPUs requested but this "
            "host has",
        ),
        (
            {
                "instance_types": [
                    {"id": "x", "compute_info": {"cpu_limit": "1", "cpu_memory": "64Ei"}}
                ]
            },
            "nodepools[0].instance_types[0].compute_info.cpu_memory:",
        ),
        (
            {
                "instance_types": [
                    {
                        "id": "x",
                        "compute_info": {
                            "cpu_limit": "1",
                            "cpu_memory": "1Gi",
                            "num_accelerators": 1,
                        },
                    }
                ]
            },
            "num_accelerators: 1 GPU(s) requested but this host has no GPU",
        ),
        (
            {"instance_types": [{"id": "x", "compute_info": {"cpu_limit": "lots"}}]},
            "nodepools[0].instance_types[0].compute_info.cpu_limit: 'lots' is not a quantity",
        ),
        (
            {"instance_types": [{"id": "x", "compute_info": {"accelerator_memory": "8Gi"}}]},
            "accelerator_memory is set but num_accelerators is 0",
        ),
        (
            {"instance_types": [{"id": "no-such-type"}]},
            "instance type 'no-such-type' is not offered by provider 'local' in region 'local'",
        ),
        ({"instance_types": []}, "nodepools[0].instance_types: required field is missing"),
        (
            {"max_instances": 4_000_000_000},
            "nodepools[0].max_instances: Input should be less than or equal to 1000 "
            "(got 4000000000)",
        ),
        (
            {"description": "x" * (8 << 20)},
            "nodepools[0].description: String should have at most 512 characters (got 8388608)",
        ),
    ],
)
def test_invalid_nodepools_are_refused_and_write_nothing(api, fields, text):
    make_cluster(api)
    response = api.call(
        "PostNodepools", compute_cluster_id="cc", nodepools=[nodepool("np", **fields)]
    )
    assert response.status.code == sc.NODEPOOL_INVALID_ARGUMENT, response.status
    assert text in response.status.description
    assert ok(api.call("ListNodepools")).nodepools == []


def test_nodepool_in_missing_cluster(api):
    response = api.call("PostNodepools", compute_cluster_id="ghost", nodepools=[nodepool()])
    assert response.status.code == sc.COMPUTE_CLUSTER_DOES_NOT_EXIST


def test_max_instances_zero_disables_the_pool(api):
    make_cluster(api)
    assert make_nodepool(api, min_instances=0, max_instances=0).max_instances == 0


def test_duplicate_nodepool(api):
    make_cluster(api)
    make_nodepool(api)
    again = api.call("PostNodepools", compute_cluster_id="cc", nodepools=[nodepool()])
    assert again.status.code == sc.NODEPOOL_INVALID_REQUEST
    assert "already exists" in again.status.description


def test_delete_removes_it_from_deployments_and_deletes_those_left_with_none(api):
    version = make_stack(api)
    make_nodepool(api, id="np2")
    make_deployment(api, "solo", version=version)
    make_model(api, "m2")
    make_deployment(
        api,
        "pair",
        model="m2",
        nodepools=[
            {"id": "np", "compute_cluster": {"id": "cc"}},
            {"id": "np2", "compute_cluster": {"id": "cc"}},
        ],
    )
    response = ok(api.call("DeleteNodepools", compute_cluster_id="cc", ids=["np"]))
    assert response.status.details == (
        "removed nodepools: cc/np; deployments deleted (no nodepool left): solo; "
        "deployments that lost a nodepool: pair"
    )
    assert [d.id for d in ok(api.call("ListDeployments")).deployments] == ["pair"]


def test_patch_bounds(api):
    make_cluster(api)
    make_nodepool(api)
    patched = ok(
        api.call(
            "PatchNodepools",
            compute_cluster_id="cc",
            action="merge",
            nodepools=[nodepool("np", max_instances=5)],
        )
    )
    assert patched.nodepools[0].max_instances == 5
    bad = api.call(
        "PatchNodepools",
        compute_cluster_id="cc",
        action="overwrite",
        nodepools=[nodepool("np", min_instances=9, max_instances=5)],
    )
    assert bad.status.code == sc.NODEPOOL_INVALID_ARGUMENT
    wrong_action = api.call(
        "PatchNodepools", compute_cluster_id="cc", action="remove", nodepools=[nodepool("np")]
    )
    assert "invalid action 'remove'; use one of: overwrite, merge" in (
        wrong_action.status.description
    )
