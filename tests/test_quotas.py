"""Quotas: headroom and floor checks as tables (pure), the settings' rules, `orchard serve`'s
options and file, and the check of deployment writes over the API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from clarifai_grpc.grpc.api import resources_pb2 as r
from clarifai_grpc.grpc.api.status import status_code_pb2 as sc
from click.testing import CliRunner
from google.protobuf import json_format

from orchard import errors
from orchard.cli import serve as serve_module
from orchard.configs import AutoscaleSpec, ComputeInfoSpec
from orchard.orchestration.autoscale import AutoscalePolicy
from orchard.orchestration.resources import Resources
from orchard.quotas import (
    NO_LIMITS,
    Quota,
    Quotas,
    Usage,
    capped,
    floor_excess,
    floor_of,
    headroom,
    quotas_from,
    total,
)
from orchard.server.app import Settings
from orchard.services.quotas import replica_usage
from orchard.store.models import DeploymentRow, ModelVersionRow
from orchard.testing import ServerThread
from tests.conftest import Api
from tests.resources import deployment, make_cluster, make_model, make_nodepool, make_stack, ok

GIB = 2**30
ONE = Usage(1, 1.0, GIB)  # a replica of 1 CPU and 1Gi
GPU = Usage(1, 2.0, 4 * GIB, 1)

# -- headroom: (quota, in use, one replica) → (replicas that fit, the bound, the reason) ------

HEADROOM = {
    "no-limits": (NO_LIMITS, ONE.times(50), ONE, None, "", ""),
    "room-under-replicas": (
        Quota(replicas=4),
        ONE,
        ONE,
        3,
        "replicas",
        "user 'bob' has room for 3 more replicas under its quota of 4 replicas "
        "(1 replica in use, 1 replica each)",
    ),
    "at-replicas": (
        Quota(replicas=4),
        ONE.times(4),
        ONE,
        0,
        "replicas",
        "user 'bob' is at its quota of 4 replicas (4 replicas in use)",
    ),
    "over-replicas-after-a-lowered-quota": (
        Quota(replicas=2),
        ONE.times(3),
        ONE,
        0,
        "replicas",
        "user 'bob' is at its quota of 2 replicas (3 replicas in use)",
    ),
    "cpus-bind-before-replicas": (
        Quota(replicas=10, cpus=3),
        ONE,
        ONE,
        2,
        "cpus",
        "user 'bob' has room for 2 more replicas under its quota of 3 CPUs "
        "(1 CPU in use, 1 CPU each)",
    ),
    "near-cpus-too-few-for-one": (
        Quota(cpus=8),
        Usage(3, 6.0),
        Usage(1, 4.0),
        0,
        "cpus",
        "user 'bob' is near its quota of 8 CPUs (6 CPUs in use; one replica needs 4 CPUs)",
    ),
    "fractional-cpus-add-up-exactly": (
        Quota(cpus=1),
        Usage(2, 0.1 + 0.2),
        Usage(1, 0.1),
        7,
        "cpus",
        "user 'bob' has room for 7 more replicas under its quota of 1 CPU "
        "(0.3 CPUs in use, 0.1 CPUs each)",
    ),
    "memory": (
        Quota(memory=16 * GIB),
        ONE.times(15),
        Usage(1, 1.0, 2 * GIB),
        0,
        "memory",
        "user 'bob' is near its quota of 16Gi of memory (15Gi of memory in use; one replica "
        "needs 2Gi of memory)",
    ),
    "gpus": (
        Quota(gpus=2, cpus=100),
        GPU,
        GPU,
        1,
        "gpus",
        "user 'bob' has room for 1 more replica under its quota of 2 GPUs (1 GPU in use, "
        "1 GPU each)",
    ),
    "a-gpu-quota-never-binds-a-cpu-replica": (Quota(gpus=0), GPU, ONE, None, "", ""),
}


@pytest.mark.parametrize(
    ("quota", "used", "each", "fits", "resource", "reason"),
    HEADROOM.values(),
    ids=HEADROOM.keys(),
)
def test_headroom(
    quota: Quota, used: Usage, each: Usage, fits: int | None, resource: str, reason: str
) -> None:
    room = headroom("bob", quota, used, each)
    assert (room.replicas, room.resource, room.reason) == (fits, resource, reason)


def test_a_capped_deployment_says_how_many_it_starts_and_what_to_do() -> None:
    room = headroom("bob", Quota(replicas=4), ONE.times(4), ONE)
    assert capped(room, 2) == (
        "user 'bob' is at its quota of 4 replicas (4 replicas in use): starting 0 of 2 more "
        "replicas wanted; ask the operator to raise it (orchard serve --quota-replicas, or "
        "the quotas file) or lower min_replicas of another deployment"
    )


# -- floors at create and patch: (quota, others, before, after) → the excess named ------------

FLOORS = {
    "fits": (Quota(replicas=4), ONE.times(2), Usage(), ONE.times(2), ""),
    "unlimited": (NO_LIMITS, ONE.times(99), Usage(), ONE.times(9), ""),
    "replicas-over": (
        Quota(replicas=4),
        ONE.times(3),
        Usage(),
        ONE.times(2),
        "deployment 'd2' would keep a floor of 2 replicas (min_replicas + soft_min_replicas), "
        "and user 'bob' has a quota of 4 replicas with 3 replicas held by the floors of its "
        "other deployments (5 replicas in all); lower min_replicas or soft_min_replicas of "
        "this or another deployment, or ask the operator to raise the quota (orchard serve "
        "--quota-replicas, or the quotas file)",
    ),
    "memory-over": (
        Quota(replicas=10, memory=4 * GIB),
        ONE.times(2),
        Usage(),
        Usage(1, 1.0, 3 * GIB),
        "deployment 'd2' would keep a floor of 1 replica holding 3Gi of memory "
        "(min_replicas + soft_min_replicas), and user 'bob' has a quota of 4Gi of memory with "
        "2Gi of memory held by the floors of its other deployments (5Gi of memory in all); "
        "lower min_replicas or soft_min_replicas of this or another deployment, or ask the "
        "operator to raise the quota (orchard serve --quota-memory, or the quotas file)",
    ),
    # Left over by a lowered quota: a write that does not raise what is over passes.
    "over-but-unchanged": (Quota(replicas=2), ONE.times(2), ONE.times(2), ONE.times(2), ""),
    "over-but-lowered": (Quota(replicas=2), ONE.times(2), ONE.times(3), ONE.times(1), ""),
    "over-and-raised": (
        Quota(replicas=2),
        ONE.times(2),
        ONE.times(1),
        ONE.times(2),
        "quota of 2 replicas with 2 replicas held",
    ),
    # More memory per replica, the same count: only memory grew, and it fits.
    "bigger-replicas-within-memory": (
        Quota(replicas=2, memory=8 * GIB),
        ONE.times(2),
        ONE,
        Usage(1, 1.0, 4 * GIB),
        "",
    ),
}


@pytest.mark.parametrize(
    ("quota", "others", "before", "after", "problem"), FLOORS.values(), ids=FLOORS.keys()
)
def test_floor_excess(quota: Quota, others: Usage, before: Usage, after: Usage, problem: str):
    found = floor_excess("bob", "d2", quota, others, before, after)
    assert problem in found if problem else found == ""
    assert bool(found) == bool(problem)


@pytest.mark.parametrize(
    "autoscale",
    [
        {},
        {"min_replicas": 2, "max_replicas": 5},
        {"min_replicas": 2, "soft_min_replicas": 2, "max_replicas": 5},
        {"min_replicas": 2, "soft_min_replicas": 9, "max_replicas": 5},
        {"soft_min_replicas": 3},
    ],
)
def test_the_floor_is_the_autoscalers(autoscale: dict[str, int]) -> None:
    spec = AutoscaleSpec(**autoscale)
    assert floor_of(spec, disabled=False) == AutoscalePolicy.from_spec(spec).floor
    assert floor_of(spec, disabled=True) == 0


@pytest.mark.parametrize(
    "info",
    [
        ComputeInfoSpec(cpu_limit="1", cpu_memory="1Gi"),
        ComputeInfoSpec(cpu_limit="4", cpu_requests="500m", cpu_memory="8Gi"),
        ComputeInfoSpec(cpu_memory="8Gi", cpu_memory_requests="1536Mi"),
        ComputeInfoSpec(cpu_limit="2", num_accelerators=2, accelerator_memory="40Gi"),
        ComputeInfoSpec(),
    ],
)
def test_a_replica_counts_what_placement_reserves_for_it(info: ComputeInfoSpec) -> None:
    request = Resources.from_compute_info(info)
    assert Usage.of_compute_info(info) == Usage(
        1, request.cpus, request.memory_bytes, request.accelerators
    )


def test_usage_adds_up() -> None:
    assert total([ONE, GPU, ONE.times(2)]) == Usage(4, 5.0, 7 * GIB, 1)
    assert total([]) == Usage()


# -- settings: the file and the options -------------------------------------------------------


def test_users_replace_the_default_field_by_field_and_the_operator_is_exempt() -> None:
    quotas = quotas_from(
        {
            "default": {"replicas": 8, "cpus": "16", "memory": "64Gi"},
            "users": {"alice": {"gpus": 4}, "bob": {"cpus": None}, "admin": {"replicas": 2}},
        },
        {"replicas": 4, "cpus": None, "memory": None, "gpus": None},
    ).with_operator("admin")
    default = Quota(replicas=4, cpus=16.0, memory=64 * GIB)
    assert quotas.for_user("carol") == default  # the option replaced the file's 8
    assert quotas.for_user("alice") == Quota(4, 16.0, 64 * GIB, 4)
    assert quotas.for_user("bob") == Quota(replicas=4, memory=64 * GIB)  # null lifts a limit
    assert quotas.for_user("admin") == Quota(2, 16.0, 64 * GIB)  # named: a user like any other
    assert Quotas(default).with_operator("admin").for_user("admin") == NO_LIMITS


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"users": {"bob": {"memory": "16XB"}}}, "users.bob.memory: '16XB' is not a quantity"),
        ({"default": {"replicas": -1}}, "default.replicas: Input should be greater than or equal"),
        ({"default": {"cpu": 4}}, "default.cpu: unknown field; allowed here: cpus, gpus, memory"),
        ({"default": {"gpus": "2"}}, "default.gpus: Input should be a valid integer"),
        ({"users": {"bad id": {}}}, "users: user id 'bad id' is not a valid id"),
        ({"quota": {}}, "quota: unknown field; allowed here: default, users"),
        ([{"replicas": 1}], "expected a mapping of fields, got list"),
    ],
)
def test_a_bad_quotas_file_names_the_field(data: Any, problem: str) -> None:
    with pytest.raises(errors.UserError) as caught:
        quotas_from(data, {})
    assert problem in caught.value.message


@pytest.fixture
def serve_settings(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    """`orchard serve` records the settings it would start the server with, and starts none."""
    started: list[Settings] = []

    async def record(settings: Settings) -> None:
        started.append(settings)

    monkeypatch.setattr(serve_module, "_serve", record)
    return started


def test_serve_takes_the_quotas_file_and_options(
    tmp_path: Path, serve_settings: list[Settings]
) -> None:
    path = tmp_path / "quotas.yaml"
    path.write_text("default: {replicas: 8, memory: 16Gi}\nusers:\n  alice: {replicas: 20}\n")
    args = ["--home", tmp_path / "home", "--quotas", path, "--quota-cpus", "500m"]
    args += ["--quota-gpus", "1"]
    result = CliRunner().invoke(serve_module.serve, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    (settings,) = serve_settings
    assert settings.quotas == Quotas(
        Quota(8, 0.5, 16 * GIB, 1), {"alice": Quota(20, 0.5, 16 * GIB, 1)}
    )


@pytest.mark.parametrize(
    ("text", "args", "problem"),
    [
        ("users:\n  bob: {memory: 16XB}\n", [], "users.bob.memory: '16XB' is not a quantity"),
        ("default: [\n", [], "cannot read"),
        ("", ["--quota-memory", "lots"], "'lots' is not a quantity"),
        ("", ["--quota-replicas", "-1"], "-1 is not in the range x>=0"),
    ],
)
def test_serve_refuses_to_start_with_bad_quotas(
    tmp_path: Path, serve_settings: list[Settings], text: str, args: list[str], problem: str
) -> None:
    path = tmp_path / "quotas.yaml"
    path.write_text(text)
    result = CliRunner().invoke(serve_module.serve, ["--quotas", str(path), *args])
    assert result.exit_code != 0
    assert problem in " ".join(result.output.split())
    assert serve_settings == []


# -- create and patch over the API ------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    """A server whose users may hold floors of 3 replicas and 3Gi (admin, its operator: any)."""
    quotas = Quotas(Quota(replicas=3, memory=3 * GIB))
    with ServerThread(tmp_path / "home", offline=True, quotas=quotas) as running:
        yield running


def floor(api: Api, dep: str, model: str, min_replicas: int) -> Any:
    autoscale = {"min_replicas": min_replicas, "max_replicas": 5}
    return api.call(
        "PostDeployments", deployments=[deployment(dep, model=model, autoscale_config=autoscale)]
    )


def patch(api: Api, dep: str, **fields: Any) -> Any:
    change = json_format.ParseDict({"id": dep, **fields}, r.Deployment())
    return api.call("PatchDeployments", deployments=[change], action="merge")


def test_a_deployment_whose_floor_breaks_the_quota_is_refused(other: Api) -> None:
    make_stack(other)
    make_model(other, "m2")
    ok(floor(other, "d1", "m", 2))
    refused = floor(other, "d2", "m2", 2)
    assert refused.status.code == sc.CONN_EXCEEDS_LIMITS
    assert refused.status.description.startswith(
        "deployments[0]: deployment 'd2' would keep a floor of 2 replicas (min_replicas + "
        "soft_min_replicas), and user 'bob' has a quota of 3 replicas with 2 replicas held by "
        "the floors of its other deployments (4 replicas in all)"
    )
    assert [d.id for d in ok(other.call("ListDeployments")).deployments] == ["d1"]
    ok(floor(other, "d2", "m2", 1))  # what is left fits


def test_memory_counts_what_a_replica_of_the_version_asks_for(other: Api) -> None:
    make_stack(other)  # a version without inference_compute_info: 1 CPU and 1Gi a replica
    refused = floor(other, "d1", "m", 4)
    assert refused.status.code == sc.CONN_EXCEEDS_LIMITS
    assert "quota of 3 replicas" in refused.status.description  # replicas are checked first
    with_more_memory = json_format.ParseDict(
        {"inference_compute_info": {"cpu_limit": "1", "cpu_memory": "2Gi"}}, r.ModelVersion()
    )
    uid = r.UserAppIDSet(user_id="bob", app_id="app")
    ok(other.call("PostModels", user_app_id=uid, models=[r.Model(id="big")]))
    ok(
        other.call(
            "PostModelVersions", user_app_id=uid, model_id="big", model_versions=[with_more_memory]
        )
    )
    refused = floor(other, "d2", "big", 2)
    assert "floor of 2 replicas holding 4Gi of memory" in refused.status.description
    assert "orchard serve --quota-memory" in refused.status.description


def test_a_patch_may_not_raise_a_floor_past_the_quota_but_may_lower_it(
    server: ServerThread, other: Api
) -> None:
    make_stack(other)
    ok(floor(other, "d1", "m", 3))
    raised = patch(other, "d1", autoscale_config={"min_replicas": 4})
    assert raised.status.code == sc.CONN_EXCEEDS_LIMITS
    assert "would keep a floor of 4 replicas" in raised.status.description
    assert "with 0 replicas held by the floors of its other deployments" in (
        raised.status.description
    )
    # The operator lowers the quota: a user left over it may still edit, and shrink.
    assert server.server is not None
    server.server.runtime.quotas = Quotas(Quota(replicas=1))
    ok(patch(other, "d1", description="still over, not raised"))
    ok(patch(other, "d1", autoscale_config={"min_replicas": 2}))
    raised = patch(other, "d1", autoscale_config={"min_replicas": 3})
    assert "user 'bob' has a quota of 1 replica" in raised.status.description


def test_a_deployment_stored_before_the_bounds_still_counts_and_blocks_nothing_else(
    server: ServerThread, other: Api
) -> None:
    make_stack(other)
    make_model(other, "m2")
    make_model(other, "m3")
    ok(floor(other, "d1", "m", 1))
    assert server.server is not None
    with server.server.store.session() as session:  # as an older server stored it
        row = session.get(DeploymentRow, ("bob", "d1"))
        assert row is not None
        row.spec = {**row.spec, "autoscale_config": {"min_replicas": 1, "max_replicas": 10**9}}
    ok(floor(other, "d2", "m2", 2))  # 1 + 2 fits in 3
    refused = floor(other, "d3", "m3", 1)
    assert refused.status.code == sc.CONN_EXCEEDS_LIMITS, refused.status


def test_disabled_deployments_and_the_operator_hold_no_quota(api: Api, other: Api) -> None:
    make_stack(other)
    make_model(other, "m2")
    ok(floor(other, "d1", "m", 3))
    ok(patch(other, "d1", status="DISABLED"))
    ok(floor(other, "d2", "m2", 3))  # d1 is disabled: its floor is 0
    make_stack(api)
    ok(floor(api, "mine", "m", 5))  # the operator has no limits


def test_deployments_on_local_dev_clusters_hold_no_quota(other: Api) -> None:
    make_cluster(other, cluster_type="local-dev")
    make_nodepool(other)
    make_model(other)
    ok(floor(other, "d1", "m", 5))


class Packages:
    """A package store whose one built package asks for 4 CPUs and 8Gi a replica."""

    def unpacked_package(self, digest: str) -> Any:
        if digest != "good":
            raise errors.ModelInvalid("the uploaded package is not a valid tar.gz archive")
        info = ComputeInfoSpec(cpu_limit="4", cpu_memory="8Gi")
        return SimpleNamespace(config=SimpleNamespace(inference_compute_info=info))


STATED = {"inference_compute_info": {"cpu_limit": "2", "cpu_memory": "2Gi"}}


@pytest.mark.parametrize(
    ("status", "digest", "spec", "usage"),
    [
        (sc.MODEL_TRAINED, "good", STATED, Usage(1, 4.0, 8 * GIB)),  # built: its package
        (sc.MODEL_TRAINED, "broken", STATED, Usage(1, 2.0, 2 * GIB)),  # unreadable: as stated
        (sc.MODEL_BUILDING, "good", STATED, Usage(1, 2.0, 2 * GIB)),  # not built: as stated
        (sc.MODEL_BUILDING, "", {}, Usage(1, 1.0, GIB)),  # nothing stated: the default
        (sc.MODEL_BUILDING, "", {"inference_compute_info": {"cpu_limit": "x"}}, ONE),
    ],
)
def test_a_replica_of_a_version_asks_for(
    status: int, digest: str, spec: dict[str, Any], usage: Usage
) -> None:
    version = ModelVersionRow(status_code=status, package_digest=digest, spec=spec)
    assert replica_usage(version, Packages()) == usage  # type: ignore[arg-type]
