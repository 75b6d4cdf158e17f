"""What the SDK sends, without a server: configs validated before sending, ids and owners filled
in, lazy loading of hand-built resources. The wire is replaced by a recorder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2, status_pb2

from orchard import ComputeCluster, Deployment, Nodepool, User, errors, wire
from orchard.client.base import BaseClient

OK = status_pb2.Status(code=status_code_pb2.SUCCESS)
CLUSTER = {
    "compute_cluster": {
        "id": "from-config",
        "cloud_provider": {"id": "local"},
        "region": "na",
        "cluster_type": "local-dev",
        "managed_by": "user",
    }
}
NODEPOOL = {
    "instance_types": [{"id": "local", "compute_info": {"cpu_limit": "1", "cpu_memory": "1Gi"}}],
    "node_capacity_type": {"capacity_types": [1]},
    "min_instances": 0,
    "max_instances": 1,
}
DEPLOYMENT = {
    "worker": {"model": {"id": "m", "app_id": "a", "model_version": {"id": "v"}}},
    "autoscale_config": {"min_replicas": 0, "max_replicas": 2},
}


class Recorder:
    """Stands in for the wire: records (rpc, request) and answers an empty success."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.answers: dict[str, Any] = {}

    def __call__(self, client: BaseClient, rpc_name: str, request: Any) -> Any:
        self.calls.append((rpc_name, request))
        answer = self.answers.get(rpc_name) or wire.response_class(rpc_name)()
        answer.status.CopyFrom(OK)
        return answer

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


@pytest.fixture
def wire_log(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()
    monkeypatch.setattr(BaseClient, "_call", lambda self, name, req: recorder(self, name, req))
    return recorder


@pytest.fixture
def user() -> User:
    return User(user_id="alice", base_url="127.0.0.1:1", pat="p")


# -- compute clusters --------------------------------------------------------------------------


def test_cluster_from_dict_with_id_argument_winning(wire_log, user):
    cc = user.create_compute_cluster(compute_cluster_id="local-cc", compute_cluster_config=CLUSTER)
    [(name, request)] = wire_log.calls
    assert name == "PostComputeClusters"
    assert request.user_app_id.user_id == "alice"
    assert request.compute_clusters[0].id == "local-cc"
    assert request.compute_clusters[0].cloud_provider.id == "local"
    assert cc.id == "local-cc" and cc.region == "na"  # the sent proto (the recorder echoes none)


def test_cluster_from_yaml_file(wire_log, user, tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text(
        "compute_cluster:\n  id: yaml-cc\n  cloud_provider: {id: local}\n  region: na\n"
    )
    assert user.create_compute_cluster(config_filepath=path).id == "yaml-cc"


def test_cluster_inner_mapping_is_accepted(wire_log, user):
    cc = user.create_compute_cluster(compute_cluster_config=CLUSTER["compute_cluster"])
    assert cc.id == "from-config"


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"config_filepath": "x.yaml", "compute_cluster_config": CLUSTER}],
)
def test_cluster_needs_exactly_one_config(wire_log, user, kwargs):
    with pytest.raises(errors.UserError, match="exactly one of config_filepath"):
        user.create_compute_cluster(**kwargs)
    assert wire_log.calls == []


def test_invalid_cluster_config_is_refused_before_sending(wire_log, user):
    bad = {"compute_cluster": {"id": "x", "cloud_provider": {"id": "local"}, "regoin": "na"}}
    with pytest.raises(errors.ComputeClusterInvalid) as info:
        user.create_compute_cluster(compute_cluster_config=bad)
    assert "compute_cluster.regoin: unknown field" in str(info.value)
    assert "compute_cluster.region: required field is missing" in str(info.value)
    assert wire_log.calls == []


def test_missing_config_file(wire_log, user, tmp_path):
    with pytest.raises(errors.UserError, match="config file not found"):
        user.create_compute_cluster(config_filepath=tmp_path / "nope.yaml")


def test_cluster_without_any_id(wire_log, user):
    inner = {k: v for k, v in CLUSTER["compute_cluster"].items() if k != "id"}
    with pytest.raises(
        errors.UserError, match=r"pass compute_cluster_id= or set compute_cluster\.id"
    ):
        user.create_compute_cluster(compute_cluster_config=inner)


@pytest.mark.parametrize("ids", ["cc", ("cc",), None, []])
def test_delete_needs_a_list(wire_log, user, ids):
    with pytest.raises(errors.UserError, match="compute_cluster_ids"):
        user.delete_compute_clusters(ids)
    assert wire_log.calls == []


# -- nodepools ---------------------------------------------------------------------------------


def test_nodepool_belongs_to_this_cluster(wire_log, user):
    cc = ComputeCluster("local-cc", _client=user)
    other_cluster = dict(NODEPOOL, compute_cluster={"id": "elsewhere"}, id="config-id")
    np = cc.create_nodepool(nodepool_id="cpu", nodepool_config={"nodepool": other_cluster})
    [(name, request)] = wire_log.calls
    assert name == "PostNodepools"
    assert request.compute_cluster_id == "local-cc"
    sent = request.nodepools[0]
    assert (sent.id, sent.compute_cluster.id, sent.compute_cluster.user_id) == (
        "cpu",
        "local-cc",
        "alice",
    )
    assert np.compute_cluster_id == "local-cc"


def test_invalid_nodepool_config_names_the_field(wire_log, user):
    cc = ComputeCluster("local-cc", _client=user)
    with pytest.raises(errors.NodepoolInvalid, match=r"nodepool: min_instances \(3\) is greater"):
        cc.create_nodepool(nodepool_id="np", nodepool_config=dict(NODEPOOL, min_instances=3))
    assert wire_log.calls == []


# -- deployments -------------------------------------------------------------------------------


def test_deployment_without_nodepools_goes_to_this_nodepool(wire_log, user):
    np = Nodepool("cpu", compute_cluster_id="local-cc", _client=user)
    dep = np.create_deployment(deployment_id="dep", deployment_config={"deployment": DEPLOYMENT})
    [(name, request)] = wire_log.calls
    assert name == "PostDeployments"
    sent = request.deployments[0]
    assert sent.id == "dep" and sent.user_id == "alice"
    assert [(n.id, n.compute_cluster.id, n.compute_cluster.user_id) for n in sent.nodepools] == [
        ("cpu", "local-cc", "alice")
    ]
    assert sent.worker.model.user_id == "alice"
    assert isinstance(dep, Deployment) and dep.id == "dep"


def test_deployment_nodepools_from_config_keep_their_clusters(wire_log, user):
    np = Nodepool("cpu", compute_cluster_id="local-cc", _client=user)
    config = dict(DEPLOYMENT, id="cfg", nodepools=[{"id": "gpu", "compute_cluster": {"id": "g"}}])
    np.create_deployment(deployment_config=config)
    sent = wire_log.calls[0][1].deployments[0]
    assert sent.id == "cfg"
    assert [(n.id, n.compute_cluster.id, n.compute_cluster.user_id) for n in sent.nodepools] == [
        ("gpu", "g", "alice")
    ]


def test_deployment_finds_the_cluster_of_its_nodepool(wire_log, user):
    found = resources_pb2.Nodepool(id="cpu", compute_cluster=resources_pb2.ComputeCluster(id="cc9"))
    wire_log.answers["GetNodepool"] = service_pb2.SingleNodepoolResponse(nodepool=found)
    np = Nodepool("cpu", _client=user)
    np.create_deployment(deployment_id="dep", deployment_config=DEPLOYMENT)
    assert wire_log.names() == ["GetNodepool", "PostDeployments"]
    lookup = wire_log.calls[0][1]
    assert (lookup.nodepool_id, lookup.compute_cluster_id) == ("cpu", "")
    assert wire_log.calls[1][1].deployments[0].nodepools[0].compute_cluster.id == "cc9"


def test_invalid_deployment_config_is_refused_before_sending(wire_log, user):
    np = Nodepool("cpu", compute_cluster_id="cc", _client=user)
    config = dict(DEPLOYMENT, autoscale_config={"enable_packing": True})
    with pytest.raises(errors.DeploymentInvalid, match="enable_packing was removed"):
        np.create_deployment(deployment_id="dep", deployment_config=config)
    assert wire_log.calls == []


def test_list_deployments_of_a_nodepool_with_filters(wire_log, user):
    np = Nodepool("cpu", compute_cluster_id="cc", _client=user)
    assert list(np.list_deployments(filter_by={"model_version_ids": ["v1"]})) == []
    request = wire_log.calls[0][1]
    assert (request.nodepool_id, request.compute_cluster_id) == ("cpu", "cc")
    assert list(request.model_version_ids) == ["v1"]
    assert (request.page, request.per_page) == (1, 128)
    with pytest.raises(errors.UserError, match="invalid deployment filter"):
        list(np.list_deployments(filter_by={"colour": "red"}))


def test_user_lists_deployments_across_nodepools(wire_log, user):
    answer = service_pb2.MultiDeploymentResponse(deployments=[resources_pb2.Deployment(id="d")])
    wire_log.answers["ListDeployments"] = answer
    assert [d.id for d in user.list_deployments(page_no=1, per_page=5)] == ["d"]
    request = wire_log.calls[0][1]
    assert (request.nodepool_id, request.page, request.per_page) == ("", 1, 5)


# -- resource objects ----------------------------------------------------------------------------


def test_hand_built_resource_loads_once_on_first_fall_through(wire_log, user):
    answer = resources_pb2.ComputeCluster(id="cc", region="eu", description="loaded")
    wire_log.answers["GetComputeCluster"] = service_pb2.SingleComputeClusterResponse(
        compute_cluster=answer
    )
    cc = ComputeCluster(compute_cluster_id="cc", user_id="alice", base_url="h:1", pat="p")
    assert repr(cc) == "ComputeCluster(id='cc', user_id='alice')"
    assert wire_log.calls == []  # neither construction nor repr calls the server
    assert (cc.region, cc.description) == ("eu", "loaded")
    assert wire_log.names() == ["GetComputeCluster"]
    assert "region='eu'" in repr(cc)
    with pytest.raises(AttributeError):
        _ = cc.no_such_field
    cc.refresh()
    assert wire_log.names() == ["GetComputeCluster"] * 2


def test_resource_needs_an_id_and_known_fields():
    with pytest.raises(errors.UserError, match="ComputeCluster needs compute_cluster_id"):
        ComputeCluster(pat="p")
    with pytest.raises(errors.UserError, match="pass only fields of ComputeCluster"):
        ComputeCluster("cc", pat="p", colour="red")
    assert ComputeCluster("cc", pat="p", region="na").proto.region == "na"


def test_runner_selectors():
    by_np = Nodepool.get_runner_selector("alice", "cc", "np")
    assert (by_np.nodepool.id, by_np.nodepool.compute_cluster.id) == ("np", "cc")
    assert by_np.nodepool.compute_cluster.user_id == "alice"
    by_dep = Deployment.get_runner_selector("alice", "dep")
    assert (by_dep.deployment.id, by_dep.deployment.user_id) == ("dep", "alice")


def test_pat_create_returns_the_secret(wire_log, user):
    key = resources_pb2.Key(id="s3cret", type="personal_access_token")
    wire_log.answers["PostKeys"] = service_pb2.MultiKeyResponse(keys=[key])
    assert user.create_pat(description="ci").id == "s3cret"
    sent = wire_log.calls[0][1].keys[0]
    assert (sent.type, sent.description) == ("personal_access_token", "ci")


def test_unknown_user_arguments(tmp_path: Path):
    with pytest.raises(errors.UserError, match="unknown arguments: colour"):
        User(pat="p", colour="red")
