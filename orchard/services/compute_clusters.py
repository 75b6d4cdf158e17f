"""Compute clusters: a provider and region a user's nodepools live in."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from orchard import errors
from orchard.configs import ComputeClusterSpec, ensure_id
from orchard.providers import ProviderRegistry
from orchard.services.common import Page, cli_hint
from orchard.services.nodepools import Removal, delete_nodepool_rows
from orchard.store.models import ComputeClusterRow

# Stored separately, or never stored (``key`` holds the caller's PAT in the seed's SDK).
_NOT_IN_SPEC = {"id", "user_id", "key", "cloud_provider", "region", "cluster_type"}


def not_found(owner: str, cluster_id: str) -> errors.ComputeClusterNotFound:
    return errors.ComputeClusterNotFound(
        f"compute cluster {cluster_id!r} not found for user {owner!r}; "
        f"list them with {cli_hint('computecluster list')}"
    )


def check_provider(spec: ComputeClusterSpec, providers: ProviderRegistry, where: str) -> None:
    provider = providers.get(spec.cloud_provider.id)
    if provider is None:
        raise errors.ComputeClusterInvalid(
            f"{where}.cloud_provider.id: {spec.cloud_provider.id!r} is not a provider of this "
            f"Orchard server; use one of: {', '.join(providers.ids())}"
        )
    problem = provider.check_region(spec.region)
    if problem:
        raise errors.ComputeClusterInvalid(f"{where}.region: {problem}")


def create_compute_cluster(
    session: Session,
    owner: str,
    spec: ComputeClusterSpec,
    providers: ProviderRegistry,
    where: str = "compute_cluster",
) -> ComputeClusterRow:
    ensure_id(spec.id, "compute cluster id", errors.ComputeClusterInvalid, where)
    check_provider(spec, providers, where)
    if session.get(ComputeClusterRow, (owner, spec.id)) is not None:
        raise errors.ComputeClusterConflict(
            f"compute cluster {spec.id!r} already exists for user {owner!r}; pick another id "
            f"or delete it with {cli_hint(f'computecluster delete {spec.id}')}"
        )
    row = ComputeClusterRow(
        user_id=owner,
        id=spec.id,
        cloud_provider=spec.cloud_provider.id,
        region=spec.region,
        cluster_type=spec.cluster_type,
        spec=_stored(spec),
    )
    session.add(row)
    session.flush()
    return row


def _stored(spec: ComputeClusterSpec) -> dict[str, object]:
    return spec.model_dump(exclude_none=True, exclude=_NOT_IN_SPEC | {"cloud_provider"}) | {
        "cloud_provider": spec.cloud_provider.model_dump(exclude_defaults=True)
    }


def get_compute_cluster(session: Session, owner: str, cluster_id: str) -> ComputeClusterRow:
    row = session.get(ComputeClusterRow, (owner, cluster_id))
    if row is None:
        raise not_found(owner, cluster_id)
    return row


def list_compute_clusters(session: Session, owner: str, page: Page) -> list[ComputeClusterRow]:
    query = select(ComputeClusterRow).where(ComputeClusterRow.user_id == owner)
    return list(session.scalars(page.apply(query.order_by(ComputeClusterRow.id))))


def update_compute_cluster(
    session: Session,
    owner: str,
    spec: ComputeClusterSpec,
    providers: ProviderRegistry,
    where: str,
) -> ComputeClusterRow:
    row = get_compute_cluster(session, owner, spec.id)
    if (spec.cloud_provider.id, spec.region) != (row.cloud_provider, row.region):
        raise errors.ComputeClusterInvalid(
            f"{where}: cloud_provider and region of compute cluster {row.id!r} cannot change; "
            "create a new cluster instead"
        )
    check_provider(spec, providers, where)
    row.cluster_type = spec.cluster_type
    row.spec = _stored(spec)
    return row


def delete_compute_clusters(session: Session, owner: str, cluster_ids: list[str]) -> Removal:
    """Delete clusters with their nodepools; deployments lose those nodepools, and those left
    with none are deleted. All ids must exist, or nothing is deleted."""
    if not cluster_ids:
        raise errors.InvalidRequest("no compute cluster ids given; pass at least one id")
    rows = [get_compute_cluster(session, owner, cid) for cid in dict.fromkeys(cluster_ids)]
    removal = Removal()
    for row in rows:
        removal.merge(delete_nodepool_rows(session, list(row.nodepools)))
        session.expire(row, ["nodepools"])
        removal.compute_clusters.append(row.id)
        session.delete(row)
    return removal
