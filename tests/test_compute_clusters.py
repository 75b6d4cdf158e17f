"""Compute clusters over the V2 API: CRUD, validation with exact statuses, cascade on delete."""

from __future__ import annotations

import pytest
from clarifai_grpc.grpc.api.status import status_code_pb2 as sc

from tests.resources import (
    cluster,
    make_cluster,
    make_deployment,
    make_model,
    make_nodepool,
    make_stack,
    ok,
)


def test_create_get_list_delete(api):
    created = make_cluster(api, "cc1", description="first")
    assert (created.id, created.user_id, created.region) == ("cc1", "admin", "local")
    assert created.cloud_provider.id == "local" and created.created_at.seconds > 0
    got = ok(api.call("GetComputeCluster", compute_cluster_id="cc1")).compute_cluster
    assert got.description == "first"
    make_cluster(api, "cc2")
    listed = ok(api.call("ListComputeClusters")).compute_clusters
    assert [c.id for c in listed] == ["cc1", "cc2"]
    ok(api.call("DeleteComputeClusters", ids=["cc1", "cc2"]))
    assert ok(api.call("ListComputeClusters")).compute_clusters == []


def test_the_pat_given_as_key_is_never_stored_or_returned(api):
    created = make_cluster(api, "cc1", key={"id": api.pat})
    assert not created.HasField("key")
    got = ok(api.call("GetComputeCluster", compute_cluster_id="cc1")).compute_cluster
    assert api.pat not in str(got)


def test_pagination(api):
    for i in range(5):
        make_cluster(api, f"cc{i}")
    pages = [
        [c.id for c in ok(api.call("ListComputeClusters", page=p, per_page=2)).compute_clusters]
        for p in (1, 2, 3, 4)
    ]
    assert pages == [["cc0", "cc1"], ["cc2", "cc3"], ["cc4"], []]
    too_many = api.call("ListComputeClusters", per_page=5000)
    assert too_many.status.code == sc.CONN_INVALID_REQUEST
    assert "at most 1000" in too_many.status.description


@pytest.mark.parametrize(
    ("fields", "code", "text"),
    [
        (
            {"cloud_provider": {"id": "aws"}},
            sc.COMPUTE_CLUSTER_INVALID_ARGUMENT,
            "compute_clusters[0].cloud_provider.id: 'aws' is not a provider of this Orchard server;"
            " use one of: local, ray",
        ),
        (
            {"region": "us-east-1"},
            sc.COMPUTE_CLUSTER_INVALID_ARGUMENT,
            "compute_clusters[0].region: 'us-east-1' is not a region of provider 'local'",
        ),
        (
            {"region": ""},
            sc.COMPUTE_CLUSTER_INVALID_ARGUMENT,
            "compute_clusters[0].region: required field is missing",
        ),
        (
            {"cluster_type": "shared"},
            sc.COMPUTE_CLUSTER_INVALID_ARGUMENT,
            "compute_clusters[0].cluster_type: Input should be 'dedicated' or 'local-dev'",
        ),
        (
            {"visibility": {"gettable": 20}},
            sc.COMPUTE_CLUSTER_INVALID_ARGUMENT,
            "compute_clusters[0].visibility.gettable: Input should be 10, 30 or 50",
        ),
    ],
)
def test_invalid_clusters_are_refused_and_write_nothing(api, fields, code, text):
    response = api.call("PostComputeClusters", compute_clusters=[cluster("cc1", **fields)])
    assert response.status.code == code
    assert text in response.status.description
    assert ok(api.call("ListComputeClusters")).compute_clusters == []


@pytest.mark.parametrize("bad_id", ["has space", "-leading", "a" * 65, "dot.ted"])
def test_bad_ids(api, bad_id):
    response = api.call("PostComputeClusters", compute_clusters=[cluster(bad_id)])
    assert response.status.code == sc.COMPUTE_CLUSTER_INVALID_ARGUMENT
    assert "is not a valid id" in response.status.description


def test_duplicate_id_is_refused(api):
    make_cluster(api, "cc1")
    response = api.call("PostComputeClusters", compute_clusters=[cluster("cc1")])
    assert response.status.code == sc.COMPUTE_CLUSTER_INVALID_REQUEST
    assert "already exists" in response.status.description


def test_one_bad_cluster_in_a_batch_writes_none(api):
    response = api.call(
        "PostComputeClusters", compute_clusters=[cluster("good"), cluster("bad", region="mars")]
    )
    assert response.status.code == sc.COMPUTE_CLUSTER_INVALID_ARGUMENT
    assert ok(api.call("ListComputeClusters")).compute_clusters == []


def test_missing_cluster(api):
    response = api.call("GetComputeCluster", compute_cluster_id="nope")
    assert response.status.code == sc.COMPUTE_CLUSTER_DOES_NOT_EXIST
    assert "orchard computecluster list" in response.status.description


def test_delete_cascades_to_nodepools_and_deployments(api):
    version = make_stack(api)
    make_cluster(api, "cc2")
    make_nodepool(api, cc="cc2", id="np2")
    make_deployment(api, "only-cc", version=version)
    make_model(api, "m2")
    make_deployment(
        api,
        "both",
        model="m2",
        nodepools=[
            {"id": "np", "compute_cluster": {"id": "cc"}},
            {"id": "np2", "compute_cluster": {"id": "cc2"}},
        ],
    )
    response = ok(api.call("DeleteComputeClusters", ids=["cc"]))
    assert response.status.details == (
        "removed compute clusters: cc; nodepools: cc/np; "
        "deployments deleted (no nodepool left): only-cc; deployments that lost a nodepool: both"
    )
    assert ok(api.call("ListNodepools")).nodepools[0].id == "np2"
    remaining = ok(api.call("ListDeployments")).deployments
    assert [(d.id, [n.id for n in d.nodepools]) for d in remaining] == [("both", ["np2"])]


def test_delete_unknown_id_deletes_nothing(api):
    make_cluster(api, "cc1")
    response = api.call("DeleteComputeClusters", ids=["cc1", "ghost"])
    assert response.status.code == sc.COMPUTE_CLUSTER_DOES_NOT_EXIST
    assert [c.id for c in ok(api.call("ListComputeClusters")).compute_clusters] == ["cc1"]


def test_patch_description_and_refuse_region_change(api):
    make_cluster(api, "cc1")
    patched = ok(
        api.call(
            "PatchComputeClusters",
            action="overwrite",
            compute_clusters=[cluster("cc1", description="new")],
        )
    )
    assert patched.compute_clusters[0].description == "new"
    moved = api.call(
        "PatchComputeClusters", action="overwrite", compute_clusters=[cluster("cc1", region="na")]
    )
    assert moved.status.code == sc.COMPUTE_CLUSTER_INVALID_ARGUMENT
    assert "cannot change" in moved.status.description
