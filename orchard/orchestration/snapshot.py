"""What the orchestrator reads from the store each round: the deployments it runs. Read only.

A deployment is orchestrated on the nodepools of its ``dedicated`` clusters whose provider
runs replicas; nodepools of ``local-dev`` clusters are served by runners attached by hand (the
local-runner flow) and are left alone. Each (deployment, nodepool) pair has one runner row
whose replicas the orchestrator starts. :func:`read` changes nothing: what the store lacks or
holds in excess comes back as :class:`StoreNeeds` (a runner row to make for a pair that has
none, runner rows made for pairs that no longer exist, packages not yet unpacked), which the
store edge (:meth:`~orchard.orchestration.store_edge.StoreEdge.load`) makes before it reads
again. Until then a pair without its runner row is left out of its plan.

One deployment never stops the others: a deployment whose version cannot run (made without an
upload, its package unreadable) is planned as blocked, with the reason and the fix; one that
cannot be planned at all (a stored spec that no longer validates, a bug) comes back as
:meth:`DeploymentPlan.unplanned`, its runner rows kept as they are. Only a failure of the store
itself fails the whole load.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clarifai_grpc.grpc.api.status import status_code_pb2 as sc
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, selectinload

from orchard.configs import SCHEDULING_PERFORMANCE, AutoscaleSpec, ComputeInfoSpec
from orchard.ids import PoolKey
from orchard.orchestration.repeats import reason_of
from orchard.orchestration.resources import Resources
from orchard.providers import ProviderRegistry
from orchard.providers.base import ComputeShape
from orchard.services import nodepools as nodepool_service
from orchard.services import runners
from orchard.services.builds import READY
from orchard.services.deployments import version_problem
from orchard.services.models import VersionRef
from orchard.services.packages import PackageStore
from orchard.store.models import (
    DeploymentRow,
    ModelVersionRow,
    NodepoolRow,
    RunnerRow,
    UserRow,
)

MANAGED = runners.MANAGED  # the runner metadata key naming the deployment it serves


@dataclass(frozen=True)
class RunnerNeed:
    """A runner row to make: the one whose replicas serve a deployment from a nodepool."""

    deployment: tuple[str, str]  # (user id, deployment id)
    nodepool: PoolKey
    version: tuple[str, str, str, str]  # the model version's primary key


@dataclass(frozen=True)
class StoreNeeds:
    """What a read found the store lacking or holding in excess."""

    runners: tuple[RunnerNeed, ...] = ()  # runner rows to make
    stale: tuple[str, ...] = ()  # ids of runner rows made for pairs that no longer exist
    packages: tuple[str, ...] = ()  # digests of packages to unpack

    def __bool__(self) -> bool:
        return bool(self.runners or self.stale or self.packages)


@dataclass(frozen=True)
class Unmade:
    """What the store edge could not make of a read's needs (the next read says so)."""

    packages: Mapping[str, str] = field(default_factory=dict)  # digest: why not unpacked
    runners: Mapping[tuple[str, str], Exception] = field(default_factory=dict)  # deployment


@dataclass(frozen=True)
class Snapshot:
    plans: tuple[DeploymentPlan, ...]
    needs: StoreNeeds


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
    concurrency: int  # items one replica runs at once (num_threads)
    request: Resources  # what one replica takes from an instance (with its GPUs' count and memory)
    source: VersionSource | None = None  # None until the version is built
    declared: tuple[tuple[str, str], ...] = ()  # environment variables the model's config sets
    planned: bool = True  # False: it could not be planned this round (see ``unplanned``)
    error: Exception | None = field(default=None, compare=False)  # why not, for the log

    @property
    def key(self) -> tuple[str, str]:
        return (self.user_id, self.id)

    @classmethod
    def unplanned(cls, row: DeploymentRow, error: Exception) -> DeploymentPlan:
        """A deployment that could not be planned this round for ``error``, ``blocked`` by
        why. Its pools name its nodepools (where its events go) and nothing more: no
        provider, no room."""
        pools = tuple(
            PoolPlan(
                key=PoolKey(p.user_id, p.compute_cluster_id, p.nodepool_id),
                priority=p.priority,
                provider="",
                shape=ComputeShape(0.0, 0),
                price=0.0,
                capacity_type=1,
                min_instances=0,
                max_instances=0,
                runner_id="",
            )
            for p in row.placements
        )
        return cls(
            user_id=row.user_id,
            id=row.id,
            version=VersionRef(row.model_user_id, row.app_id, row.model_id, row.model_version_id),
            disabled=row.disabled,
            autoscale=AutoscaleSpec(),
            scheduling_choice=SCHEDULING_PERFORMANCE,
            pools=pools,
            blocked=(
                f"Orchard cannot plan deployment {row.id!r} ({reason_of(error)}); change it "
                "with PatchDeployments or delete it"
            ),
            package=None,
            python=None,
            concurrency=1,
            request=Resources(0.0, 0),
            planned=False,
            error=error,
        )


@dataclass
class _Reading:
    """One call of :func:`read`: its inputs and what it found wanting."""

    session: Session
    providers: ProviderRegistry
    packages: PackageStore
    envs: Path
    unmade: Unmade  # what could not be made of an earlier read's needs
    users: int = 0
    runners: list[RunnerNeed] = field(default_factory=list)
    unpack: list[str] = field(default_factory=list)


def read(
    session: Session,
    providers: ProviderRegistry,
    packages: PackageStore,
    envs: Path,
    unmade: Unmade | None = None,
) -> Snapshot:
    """Every orchestrated deployment and what the store lacks for them; one that cannot be
    planned comes back :meth:`~DeploymentPlan.unplanned`. ``unmade``: what could not be made
    of an earlier read's needs (a package not unpacked blocks its deployments; a runner row not
    made leaves its deployment unplanned). Raises only what the store
    raises."""
    rows = session.scalars(
        select(DeploymentRow).options(selectinload(DeploymentRow.placements))
    ).all()
    reading = _Reading(session, providers, packages, envs, unmade or Unmade())
    reading.users = session.scalar(select(func.count()).select_from(UserRow)) or 0
    wanted: set[str] = set()
    kept: set[tuple[str, str]] = set()  # deployments whose runner rows stay as they are
    plans = []
    for row in rows:
        try:
            plan = _plan(reading, row)
        except SQLAlchemyError:
            raise
        except Exception as exc:
            plan = DeploymentPlan.unplanned(row, exc)
            kept.add(plan.key)
        if plan is not None and plan.pools:
            plans.append(plan)
            wanted.update(p.runner_id for p in plan.pools)
    stale = tuple(
        runner.id
        for runner in session.scalars(select(RunnerRow)).all()
        if (managed_by := runners.managed_by(runner))
        and runner.id not in wanted
        and (runner.user_id, managed_by) not in kept
    )
    needs = StoreNeeds(tuple(reading.runners), stale, tuple(dict.fromkeys(reading.unpack)))
    return Snapshot(tuple(plans), needs)


def _plan(reading: _Reading, row: DeploymentRow) -> DeploymentPlan | None:
    if (error := reading.unmade.runners.get((row.user_id, row.id))) is not None:
        raise error
    session = reading.session
    version_row = session.get(
        ModelVersionRow, (row.model_user_id, row.app_id, row.model_id, row.model_version_id)
    )
    if version_row is None:
        return None
    pools = []
    refusals = []
    for placement in row.placements:
        pool = session.get(
            NodepoolRow, (placement.user_id, placement.compute_cluster_id, placement.nodepool_id)
        )
        provider = nodepool_service.orchestrated(pool, reading.providers) if pool else None
        if pool is None or provider is None:
            continue
        refusals.append(provider.replica_problem(reading.users))
        runner = _runner_for(session, row, pool, version_row)
        if runner is None:
            key = PoolKey(pool.user_id, pool.compute_cluster_id, pool.id)
            reading.runners.append(RunnerNeed((row.user_id, row.id), key, _key(version_row)))
            continue
        pools.append(_pool_plan(pool, placement.priority, provider.id, runner.id))
    if not pools:
        return None
    blocked, files = _version_files(reading, version_row)
    blocked = next((r for r in refusals if r), blocked)
    return DeploymentPlan(
        user_id=row.user_id,
        id=row.id,
        version=VersionRef.of(version_row),
        disabled=row.disabled,
        autoscale=AutoscaleSpec.model_validate(row.spec.get("autoscale_config") or {}),
        scheduling_choice=int(row.spec.get("scheduling_choice") or SCHEDULING_PERFORMANCE),
        pools=tuple(pools),
        blocked=blocked,
        package=files.package,
        python=files.python,
        concurrency=files.concurrency,
        request=Resources.from_compute_info(files.config),
        source=files.source if not blocked else None,
        declared=files.declared if not blocked else (),
    )


def _pool_plan(pool: NodepoolRow, priority: int, provider_id: str, runner_id: str) -> PoolPlan:
    item = pool.spec["instance_types"][0]
    return PoolPlan(
        key=PoolKey(pool.user_id, pool.compute_cluster_id, pool.id),
        priority=priority,
        provider=provider_id,
        shape=nodepool_service.shape_of(ComputeInfoSpec(**item["compute_info"])),
        price=_price(item.get("price")),
        capacity_type=_capacity_type(pool.spec),
        min_instances=pool.min_instances,
        max_instances=pool.max_instances,
        runner_id=runner_id,
        region=pool.compute_cluster.region,
        instance_type=str(item.get("id", "")),
        egress=str((pool.spec.get("metadata") or {}).get("egress", "")) != "none",
    )


def _key(version: ModelVersionRow) -> tuple[str, str, str, str]:
    return (version.user_id, version.app_id, version.model_id, version.id)


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


UNKNOWN_NEED = ComputeInfoSpec(cpu_limit="1", cpu_memory="1Gi")  # of a version not built


@dataclass(frozen=True)
class _Files:
    """What a version's replicas are made of (the defaults: of a version that cannot run)."""

    package: Path | None = None  # its package folder
    python: Path | None = None  # its environment's interpreter
    concurrency: int = 1  # items one replica runs at once (num_threads)
    config: ComputeInfoSpec = field(default_factory=lambda: UNKNOWN_NEED)  # one replica's need
    source: VersionSource | None = None
    declared: tuple[tuple[str, str], ...] = ()  # environment variables its config.yaml sets


def _version_files(reading: _Reading, version: ModelVersionRow) -> tuple[str, _Files]:
    """(why replicas of ``version`` cannot start, "" when they can; what they are made of).
    A package not yet unpacked is a need of the reading."""
    if version.status_code != sc.MODEL_TRAINED:
        reason = version.status_description or f"status {version.status_code}"
        return f"version {version.id} is not built yet ({reason})", _Files()
    problem = version_problem(version, orchestrated=True)
    if problem:
        return problem, _Files()
    digest = version.package_digest
    failed, package = reading.unmade.packages.get(digest, ""), None
    if not failed:
        try:
            package = reading.packages.unpacked_if_present(digest)
        except Exception as exc:  # a package damaged on disk stops this deployment only
            failed = type(exc).__name__
    if package is None:
        if not failed:
            reading.unpack.append(digest)
        return (
            f"the package of version {version.id} is missing or damaged on the server "
            f"({failed or 'not unpacked yet'}); upload the model again and point the "
            "deployment at the new version"
        ), _Files()
    config = package.config
    secrets = tuple((s.env_var, s.value) for s in config.secrets if s.type == "env" and s.env_var)
    envs = reading.envs
    return "", _Files(
        package=package.root,
        python=envs / version.env_key / "bin" / "python",
        concurrency=config.num_threads,
        config=config.inference_compute_info,
        source=_source(version, reading.packages, envs),
        declared=secrets,
    )


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
) -> RunnerRow | None:
    """The runner whose replicas serve ``deployment`` from ``pool`` (None: not made yet)."""
    candidates = session.scalars(
        select(RunnerRow).where(
            RunnerRow.user_id == pool.user_id,
            RunnerRow.compute_cluster_id == pool.compute_cluster_id,
            RunnerRow.nodepool_id == pool.id,
            RunnerRow.model_version_id == version.id,
        )
    ).all()
    return next((r for r in candidates if runners.managed_by(r) == deployment.id), None)
