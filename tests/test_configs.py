"""Config schemas: field-path errors for the YAML a user writes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchard import configs, errors
from orchard.quantities import byte_count, cpu_count, format_bytes, parse_quantity


def _problems(spec, data, where):
    with pytest.raises(errors.OrchardError) as info:
        configs.validate(spec, data, where=where, error=errors.NodepoolInvalid)
    return info.value.message


def test_unknown_field_lists_the_allowed_ones():
    message = _problems(
        configs.NodepoolSpec,
        {"instance_types": [{"id": "x", "compute_info": {"cpu_limt": "1"}}]},
        "nodepool",
    )
    assert message.startswith(
        "invalid config: nodepool.instance_types[0].compute_info.cpu_limt:"
        " unknown field; allowed here: accelerator_memory"
    )
    assert "cpu_limit" in message


def test_a_nodepool_egress_is_default_or_none():
    data = {"instance_types": [{"id": "x"}], "metadata": {"egress": "off"}}
    message = _problems(configs.NodepoolSpec, data, "nodepool")
    assert "nodepool.metadata: " in message and "'off' is not one of default, none" in message
    data["metadata"] = {"egress": "none", "team": "a"}
    assert configs.NodepoolSpec.model_validate(data).metadata == {"egress": "none", "team": "a"}


def test_wrong_types_are_not_coerced():
    message = _problems(
        configs.NodepoolSpec, {"instance_types": [{"id": "x"}], "min_instances": "1"}, "nodepool"
    )
    assert "nodepool.min_instances: Input should be a valid integer (got '1')" in message


def test_every_problem_is_reported_at_once():
    message = _problems(
        configs.ComputeClusterSpec, {"id": "a b", "cloud_provider": {}}, "compute_cluster"
    )
    assert message.count(";") >= 2
    assert "compute_cluster.cloud_provider.id: required field is missing" in message
    assert "compute_cluster.region: required field is missing" in message


def test_removed_enable_packing_says_what_to_write():
    message = _problems(
        configs.DeploymentSpec,
        {
            "nodepools": [{"id": "np"}],
            "worker": {"model": {"id": "m"}},
            "autoscale_config": {"enable_packing": True},
        },
        "deployment",
    )
    assert "write disable_packing: true" in message


def test_autoscale_defaults_fill_zeros():
    spec = configs.validate(
        configs.DeploymentSpec,
        {"nodepools": [{"id": "np"}], "worker": {"model": {"id": "m"}}},
        where="deployment",
        error=errors.DeploymentInvalid,
    )
    auto = spec.autoscale_config
    assert (auto.min_replicas, auto.max_replicas, auto.scale_to_zero_delay_seconds) == (0, 5, 1800)
    assert spec.scheduling_choice == configs.SCHEDULING_PERFORMANCE


def test_load_config_file_problems(tmp_path):
    with pytest.raises(errors.UserError, match="config file not found"):
        configs.load_config_file(tmp_path / "nope.yaml", "nodepool", errors.NodepoolInvalid)
    broken = tmp_path / "broken.yaml"
    broken.write_text("nodepool:\n  id: [unclosed\n")
    with pytest.raises(errors.NodepoolInvalid, match=r"YAML syntax error at line \d+, column \d+"):
        configs.load_config_file(broken, "nodepool", errors.NodepoolInvalid)
    wrong_key = tmp_path / "wrong.yaml"
    wrong_key.write_text("compute_cluster: {}\n")
    with pytest.raises(errors.NodepoolInvalid, match="top-level 'nodepool:' key"):
        configs.load_config_file(wrong_key, "nodepool", errors.NodepoolInvalid)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2", 2),
        ("500m", 0.5),
        ("4.5", 4.5),
        ("1Ki", 1024),
        ("1500Mi", 1500 * 2**20),
        ("3Gi", 3 * 2**30),
        ("8G", 8 * 10**9),
        ("1e3", 1000),
    ],
)
def test_quantities(text, value):
    assert float(parse_quantity(text)) == value


@pytest.mark.parametrize("text", ["", "abc", "1Xi", "-1", "1 2"])
def test_bad_quantities(text):
    with pytest.raises(ValueError, match="is not a quantity"):
        parse_quantity(text)


@given(st.integers(min_value=0, max_value=2**62))
def test_format_bytes_round_trips(count):
    assert byte_count(format_bytes(count)) == count


@given(st.integers(min_value=1, max_value=4096))
def test_millicpus(milli):
    assert cpu_count(f"{milli}m") == pytest.approx(milli / 1000)


# -- upper bounds: what a server stores ------------------------------------------------------

NODEPOOL = {"instance_types": [{"id": "x"}]}
DEPLOYMENT = {"nodepools": [{"id": "np"}], "worker": {"model": {"id": "m"}}}
CLUSTER = {"cloud_provider": {"id": "local"}, "region": "local"}
RUNNER = {"worker": {"model": {"id": "m"}}}
LONG_ID = "a" * 65
BOUNDS = {
    "max_replicas": (
        configs.DeploymentSpec,
        DEPLOYMENT | {"autoscale_config": {"max_replicas": 4_000_000_000}},
        "deployment.autoscale_config.max_replicas: Input should be less than or equal to 1000 "
        "(got 4000000000)",
    ),
    "soft_min_replicas": (
        configs.DeploymentSpec,
        DEPLOYMENT | {"autoscale_config": {"soft_min_replicas": 1001}},
        "deployment.autoscale_config.soft_min_replicas: Input should be less than or equal to 1000",
    ),
    "max_instances": (
        configs.NodepoolSpec,
        NODEPOOL | {"max_instances": 4_000_000_000},
        "nodepool.max_instances: Input should be less than or equal to 1000 (got 4000000000)",
    ),
    "warm_instances": (
        configs.NodepoolSpec,
        NODEPOOL | {"warm_instances": 1001},
        "nodepool.warm_instances: Input should be less than or equal to 1000",
    ),
    "runner num_replicas": (
        configs.RunnerSpec,
        RUNNER | {"num_replicas": 1001},
        "runner.num_replicas: Input should be less than or equal to 1000",
    ),
    "deployment description": (
        configs.DeploymentSpec,
        DEPLOYMENT | {"description": "x" * (8 << 20)},
        "deployment.description: String should have at most 512 characters (got 8388608)",
    ),
    "cluster description": (
        configs.ComputeClusterSpec,
        CLUSTER | {"description": "x" * 513},
        "compute_cluster.description: String should have at most 512 characters (got 513)",
    ),
    "nodepool description": (
        configs.NodepoolSpec,
        NODEPOOL | {"description": "x" * 513},
        "nodepool.description: String should have at most 512 characters",
    ),
    "instance type description": (
        configs.NodepoolSpec,
        {"instance_types": [{"id": "x", "description": "x" * 513}]},
        "nodepool.instance_types[0].description: String should have at most 512 characters",
    ),
    "runner description": (
        configs.RunnerSpec,
        RUNNER | {"description": "x" * 513},
        "runner.description: String should have at most 512 characters",
    ),
    "own id": (
        configs.DeploymentSpec,
        DEPLOYMENT | {"id": "a" * 10_000},
        f"deployment.id: deployment id {'a' * 64!r}... (10000 characters) is not a valid id",
    ),
    "model id": (
        configs.DeploymentSpec,
        {"nodepools": [{"id": "np"}], "worker": {"model": {"id": LONG_ID}}},
        "deployment.worker.model.id: String should have at most 64 characters (got 65)",
    ),
    "version id": (
        configs.DeploymentSpec,
        {
            "nodepools": [{"id": "np"}],
            "worker": {"model": {"id": "m", "model_version": {"id": LONG_ID}}},
        },
        "deployment.worker.model.model_version.id: String should have at most 64 characters",
    ),
    "nodepool id": (
        configs.DeploymentSpec,
        DEPLOYMENT | {"nodepools": [{"id": LONG_ID, "compute_cluster": {"id": LONG_ID}}]},
        "deployment.nodepools[0].id: String should have at most 64 characters",
    ),
    "cluster id of a nodepool": (
        configs.DeploymentSpec,
        DEPLOYMENT | {"nodepools": [{"id": "np", "compute_cluster": {"id": LONG_ID}}]},
        "deployment.nodepools[0].compute_cluster.id: String should have at most 64 characters",
    ),
    "user id": (
        configs.DeploymentSpec,
        DEPLOYMENT | {"user_id": LONG_ID},
        "deployment.user_id: String should have at most 64 characters",
    ),
    "cloud provider id": (
        configs.ComputeClusterSpec,
        {"cloud_provider": {"id": LONG_ID}, "region": "local"},
        "compute_cluster.cloud_provider.id: String should have at most 64 characters",
    ),
    "region": (
        configs.ComputeClusterSpec,
        CLUSTER | {"region": "r" * 129},
        "compute_cluster.region: String should have at most 128 characters (got 129)",
    ),
}


@pytest.mark.parametrize(("spec", "data", "problem"), BOUNDS.values(), ids=BOUNDS.keys())
def test_upper_bounds_are_refused_by_field_path(spec, data, problem):
    where = {
        configs.DeploymentSpec: "deployment",
        configs.NodepoolSpec: "nodepool",
        configs.ComputeClusterSpec: "compute_cluster",
        configs.RunnerSpec: "runner",
    }[spec]
    message = _problems(spec, data, where)
    assert problem in message
    assert len(message) < 1000  # an oversized input never comes back in the message


def test_the_bounds_themselves_are_accepted():
    top = {"min_replicas": 1000, "max_replicas": 1000, "soft_min_replicas": 1000}
    spec = configs.DeploymentSpec.model_validate(
        DEPLOYMENT | {"description": "x" * 512, "autoscale_config": top}
    )
    assert spec.autoscale_config.max_replicas == configs.MAX_REPLICAS
    pool = configs.NodepoolSpec.model_validate(NODEPOOL | {"max_instances": 1000})
    assert pool.max_instances == configs.MAX_INSTANCES


@pytest.mark.parametrize(
    ("value", "problem"),
    [("x" * 512, ""), ("x" * 513, "the PAT description has 513 characters; write at most 512")],
)
def test_ensure_description(value, problem):
    if not problem:
        assert configs.ensure_description(value, "PAT", errors.InvalidRequest) == value
        return
    with pytest.raises(errors.InvalidRequest) as caught:
        configs.ensure_description(value, "PAT", errors.InvalidRequest)
    assert caught.value.message == problem
