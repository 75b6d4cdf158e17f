"""Quotas at create and patch: the floors of a user's deployments must fit the user's quota.

The rule and its messages are :mod:`orchard.quotas`; this reads what they need from the store.
A deployment's floor holds ``floor_of`` replicas of what one replica of its version asks for;
only deployments with a nodepool on a ``dedicated`` cluster count (the orchestrator runs
nothing for one on ``local-dev`` clusters only, whose runners are attached by hand).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from clarifai_grpc.grpc.api.status import status_code_pb2 as sc
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from orchard import errors
from orchard.configs import AutoscaleSpec, ComputeInfoSpec, DeploymentSpec
from orchard.packaging.config import PackageConfig
from orchard.quotas import Quotas, Usage, floor_excess, floor_of, total
from orchard.services.packages import PackageStore
from orchard.store.models import ComputeClusterRow, DeploymentRow, ModelVersionRow, NodepoolRow

DEFAULT_COMPUTE = PackageConfig.model_fields["inference_compute_info"].default


@dataclass(frozen=True)
class Limits:
    """What the check needs: the quotas, and the packages that say what a replica asks for
    (None: what the versions' uploads stated)."""

    quotas: Quotas = field(default_factory=Quotas)
    packages: PackageStore | None = None


UNLIMITED = Limits()  # no quotas: what callers without a server's settings get


def check_deployment_floor(
    session: Session,
    row: DeploymentRow,
    spec: DeploymentSpec,
    version: ModelVersionRow,
    nodepools: list[NodepoolRow],
    limits: Limits,
    where: str,
) -> None:
    """Raise :class:`~orchard.errors.QuotaExceeded` when writing ``spec`` (its ``version`` in
    ``nodepools``) into ``row`` (new, or as stored before this write) raises the floors of its
    owner's deployments past the owner's quota."""
    quota = limits.quotas.for_user(row.user_id)
    if quota.unlimited:
        return
    mine = (
        select(DeploymentRow)
        .where(DeploymentRow.user_id == row.user_id)
        .options(selectinload(DeploymentRow.placements))
    )
    held = {other.id: _stored_floor(session, other, limits) for other in session.scalars(mine)}
    before = held.pop(row.id, Usage())
    dedicated = any(p.compute_cluster.cluster_type == "dedicated" for p in nodepools)
    count = floor_of(spec.autoscale_config, spec.status == 1) if dedicated else 0
    after = replica_usage(version, limits.packages).times(count)
    problem = floor_excess(row.user_id, row.id, quota, total(held.values()), before, after)
    if problem:
        raise errors.QuotaExceeded(f"{where}: {problem}")


def _stored_floor(session: Session, row: DeploymentRow, limits: Limits) -> Usage:
    """The floor ``row`` holds as stored."""
    keys = [(p.user_id, p.compute_cluster_id) for p in row.placements]
    clusters = [session.get(ComputeClusterRow, key) for key in keys]
    if not any(c is not None and c.cluster_type == "dedicated" for c in clusters):
        return Usage()
    stored = row.spec.get("autoscale_config") or {}
    try:
        autoscale = AutoscaleSpec.model_validate(stored)
    except ValidationError:  # stored before today's bounds: it holds what it says
        autoscale = AutoscaleSpec.model_construct(**stored)
    version = session.get(
        ModelVersionRow, (row.model_user_id, row.app_id, row.model_id, row.model_version_id)
    )
    each = replica_usage(version, limits.packages) if version is not None else Usage()
    return each.times(floor_of(autoscale, row.disabled))


def replica_usage(version: ModelVersionRow, packages: PackageStore | None) -> Usage:
    """What one replica of ``version`` holds: its package's ``inference_compute_info`` once
    built (what the orchestrator starts it with), before that what its upload stated, else
    the package default (1 CPU, 1Gi)."""
    if packages is not None and version.status_code == sc.MODEL_TRAINED:
        try:
            package = packages.unpacked_package(version.package_digest)
            return Usage.of_compute_info(package.config.inference_compute_info)
        except (OSError, errors.OrchardError):
            pass  # the orchestrator will say what is wrong with the package
    stated = version.spec.get("inference_compute_info")
    try:
        info = ComputeInfoSpec.model_validate(stated) if stated else DEFAULT_COMPUTE
    except ValidationError:
        info = DEFAULT_COMPUTE
    return Usage.of_compute_info(info)
