"""What the orchestrator reads from the store each round: the deployments it runs.

A deployment is orchestrated on the nodepools of its ``dedicated`` clusters whose provider
runs replicas; nodepools of ``local-dev`` clusters are served by runners attached by hand (the
local-runner flow) and are left alone. Each (deployment, nodepool) pair has one runner row,
made here when missing, whose replicas the orchestrator starts; runner rows it made for pairs
that no longer exist (deployment deleted, nodepool dropped, version changed) are deleted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clarifai_grpc.grpc.api.status import status_code_pb2 as sc
from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from orchard.configs import SCHEDULING_PERFORMANCE, AutoscaleSpec, ComputeInfoSpec, RunnerSpec
from orchard.dispatch.sessions import PoolKey
from orchard.orchestration.placement import Resources
from orchard.providers import ProviderRegistry
from orchard.providers.base import ComputeShape
from orchard.services import nodepools as nodepool_service
from orchard.services import runners
from orchard.services.builds import READY
from orchard.services.models import VersionRef
from orchard.services.packages import PackageStore
from orchard.store.models import (
    ComputeClusterRow,
    DeploymentRow,
    ModelVersionRow,
    NodepoolRow,
    RunnerRow,
    UserRow,
)

MANAGED = "orchard.deployment"  # the runner metadata key naming the deployment it serves


@dataclass(frozen=True)
class PoolPlan:
    key: PoolKey
    priority: int
    provider: str
    shape: ComputeShape
    price: float
    capacity_type: int
    min_instances: int
    max_instances: int
    runner_id: str
    region: str = ""  # of its compute cluster
    instance_type: str = ""  # the id of its instance type
    egress: bool = True  # its replicas may reach the network (nodepool metadata ``egress: none``)


@dataclass(frozen=True)
class VersionSource:
    """Where a built version comes from, for replicas on machines without the server's disk."""

    archive: Path  # the package as uploaded (.tar.gz)
    digest: str
    env_key: str
    python_version: str  # of its environment
    pins: tuple[str, ...]  # the runner's dependencies its environment was built with


@dataclass(frozen=True)
class DeploymentPlan:
    user_id: str
    id: str
    version: VersionRef
    disabled: bool
    autoscale: AutoscaleSpec
    scheduling_choice: int
    pools: tuple[PoolPlan, ...]
    blocked: str  # why no replica can start yet ("" when one can): version not built...
    package: Path | None
    python: Path | None
    capacity: int  # items one replica runs at once (num_threads)
    request: Resources  # what one replica takes from an instance (with its GPUs' count and memory)
    source: VersionSource | None = None  # None until the version is built
    declared: tuple[tuple[str, str], ...] = ()  # environment variables the model's config sets

    @property
    def key(self) -> tuple[str, str]:
        return (self.user_id, self.id)


def load(
    session: Session, providers: ProviderRegistry, packages: PackageStore, envs: Path
) -> list[DeploymentPlan]:
    """Every orchestrated deployment, with runner rows made or removed to match."""
    rows = session.scalars(
        select(DeploymentRow).options(selectinload(DeploymentRow.placements))
    ).all()
    wanted: set[str] = set()
    plans = []
    users = session.scalar(select(func.count()).select_from(UserRow)) or 0
    for row in rows:
        plan = _plan(session, row, providers, packages, envs, users)
        if plan is not None:
            plans.append(plan)
            wanted.update(p.runner_id for p in plan.pools)
    for runner in session.scalars(select(RunnerRow)).all():
        if _managed_by(runner) and runner.id not in wanted:
            session.delete(runner)
    return plans


def _managed_by(runner: RunnerRow) -> str:
    metadata = runner.spec.get("metadata") or {}
    return str(metadata.get(MANAGED, ""))


def _plan(
    session: Session,
    row: DeploymentRow,
    providers: ProviderRegistry,
    packages: PackageStore,
    envs: Path,
    users: int,
) -> DeploymentPlan | None:
    autoscale = AutoscaleSpec.model_validate(row.spec.get("autoscale_config") or {})
    version_row = session.get(
        ModelVersionRow, (row.model_user_id, row.app_id, row.model_id, row.model_version_id)
    )
    pools = []
    refusals = []
    for placement in row.placements:
        pool = session.get(
            NodepoolRow, (placement.user_id, placement.compute_cluster_id, placement.nodepool_id)
        )
        if pool is None or version_row is None:
            continue
        cluster: ComputeClusterRow = pool.compute_cluster
        provider = providers.get(cluster.cloud_provider)
        if cluster.cluster_type != "dedicated" or provider is None or not provider.orchestrated:
            continue
        item = pool.spec["instance_types"][0]
        refusals.append(provider.replica_problem(users))
        pools.append(
            PoolPlan(
                key=PoolKey(pool.user_id, pool.compute_cluster_id, pool.id),
                priority=placement.priority,
                provider=provider.id,
                shape=nodepool_service.shape_of(ComputeInfoSpec(**item["compute_info"])),
                price=_price(item.get("price")),
                capacity_type=_capacity_type(pool.spec),
                min_instances=pool.min_instances,
                max_instances=pool.max_instances,
                runner_id=_runner_for(session, row, pool, version_row).id,
                region=cluster.region,
                instance_type=str(item.get("id", "")),
                egress=str((pool.spec.get("metadata") or {}).get("egress", "")) != "none",
            )
        )
    if not pools or version_row is None:
        return None
    blocked, package, python, capacity, config = _version_files(version_row, packages, envs)
    blocked = next((r for r in refusals if r), blocked)
    return DeploymentPlan(
        user_id=row.user_id,
        id=row.id,
        version=VersionRef.of(version_row),
        disabled=row.disabled,
        autoscale=autoscale,
        scheduling_choice=int(row.spec.get("scheduling_choice") or SCHEDULING_PERFORMANCE),
        pools=tuple(pools),
        blocked=blocked,
        package=package,
        python=python,
        capacity=capacity,
        request=Resources.from_compute_info(config),
        source=_source(version_row, packages, envs) if not blocked else None,
        declared=_declared(packages, version_row) if not blocked else (),
    )


def _declared(packages: PackageStore, version: ModelVersionRow) -> tuple[tuple[str, str], ...]:
    """The environment variables the model's config.yaml sets (``secrets`` of type ``env``)."""
    config = packages.unpacked_package(version.package_digest).config
    return tuple((s.env_var, s.value) for s in config.secrets if s.type == "env" and s.env_var)


def _source(version: ModelVersionRow, packages: PackageStore, envs: Path) -> VersionSource:
    try:
        built = json.loads((envs / version.env_key / READY).read_text())
    except (OSError, ValueError):
        built = {}
    return VersionSource(
        archive=packages.blob(version.package_digest),
        digest=version.package_digest,
        env_key=version.env_key,
        python_version=str(built.get("python", "")),
        pins=tuple(built.get("pins", ())),
    )


def _version_files(
    version: ModelVersionRow, packages: PackageStore, envs: Path
) -> tuple[str, Path | None, Path | None, int, ComputeInfoSpec]:
    """(why it cannot run yet, package folder, environment python, num_threads, what one
    replica needs)."""
    if version.status_code != sc.MODEL_TRAINED:
        reason = version.status_description or f"status {version.status_code}"
        default = ComputeInfoSpec(cpu_limit="1", cpu_memory="1Gi")
        return f"version {version.id} is not built yet ({reason})", None, None, 1, default
    package = packages.unpacked_package(version.package_digest)
    python = envs / version.env_key / "bin" / "python"
    config = package.config
    return "", package.root, python, config.num_threads, config.inference_compute_info


def _price(value: Any) -> float:
    try:
        return float(value or 0)
    except ValueError:
        return 0.0


def _capacity_type(spec: dict[str, Any]) -> int:
    types = (spec.get("node_capacity_type") or {}).get("capacity_types") or [1]
    return int(types[0])


def _runner_for(
    session: Session, deployment: DeploymentRow, pool: NodepoolRow, version: ModelVersionRow
) -> RunnerRow:
    """The runner whose replicas serve ``deployment`` from ``pool`` (made when missing)."""
    candidates = session.scalars(
        select(RunnerRow).where(
            RunnerRow.user_id == pool.user_id,
            RunnerRow.compute_cluster_id == pool.compute_cluster_id,
            RunnerRow.nodepool_id == pool.id,
            RunnerRow.model_version_id == version.id,
        )
    ).all()
    for runner in candidates:
        if _managed_by(runner) == deployment.id:
            return runner
    spec = RunnerSpec.model_validate(
        {
            "description": f"replicas of deployment {deployment.id}, run by Orchard",
            "metadata": {MANAGED: deployment.id},
            "worker": {
                "model": {
                    "id": version.model_id,
                    "app_id": version.app_id,
                    "user_id": version.user_id,
                    "model_version": {"id": version.id},
                }
            },
            "num_replicas": 0,
        }
    )
    return runners.create_runner(session, pool, spec, f"deployment {deployment.id}")
