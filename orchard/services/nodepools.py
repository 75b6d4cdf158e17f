"""Nodepools: groups of instances of one shape inside a compute cluster."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from orchard import errors
from orchard.configs import ComputeInfoSpec, InstanceTypeSpec, NodepoolSpec, ensure_id
from orchard.providers import ComputeShape, Provider, ProviderRegistry
from orchard.providers.base import NodepoolInfo
from orchard.quantities import byte_count, cpu_count
from orchard.services.common import Page, cli_hint, only_one
from orchard.store.models import (
    ComputeClusterRow,
    DeploymentNodepoolRow,
    DeploymentRow,
    NodepoolRow,
)

_NOT_IN_SPEC = {"id", "compute_cluster"}


@dataclass
class Removal:
    """What a delete removed, said back to the caller."""

    compute_clusters: list[str] = field(default_factory=list)
    nodepools: list[str] = field(default_factory=list)
    deployments_deleted: list[str] = field(default_factory=list)
    deployments_updated: list[str] = field(default_factory=list)

    def merge(self, other: Removal) -> None:
        self.compute_clusters += other.compute_clusters
        self.nodepools += other.nodepools
        self.deployments_deleted += other.deployments_deleted
        self.deployments_updated += other.deployments_updated

    def describe(self) -> str:
        parts = []
        for label, items in (
            ("compute clusters", self.compute_clusters),
            ("nodepools", self.nodepools),
            ("deployments deleted (no nodepool left)", self.deployments_deleted),
            ("deployments that lost a nodepool", self.deployments_updated),
        ):
            if items:
                parts.append(f"{label}: {', '.join(items)}")
        return "removed " + "; ".join(parts) if parts else "nothing removed"


def not_found(owner: str, cluster_id: str, nodepool_id: str) -> errors.NodepoolNotFound:
    return errors.NodepoolNotFound(
        f"nodepool {nodepool_id!r} not found in compute cluster {cluster_id!r} of user "
        f"{owner!r}; list them with {cli_hint(f'nodepool list {cluster_id}')}"
    )


def shape_of(info: ComputeInfoSpec) -> ComputeShape:
    return ComputeShape(
        cpus=cpu_count(info.cpu_limit) if info.cpu_limit else 0.0,
        memory_bytes=byte_count(info.cpu_memory) if info.cpu_memory else 0,
        num_accelerators=info.num_accelerators,
        accelerator_types=tuple(info.accelerator_type),
        accelerator_memory_bytes=byte_count(info.accelerator_memory)
        if info.accelerator_memory
        else 0,
    )


def orchestrated(row: NodepoolRow, providers: ProviderRegistry | None) -> Provider | None:
    """The provider that runs replicas in ``row`` for the orchestrator, or None when its
    replicas are attached by hand: a nodepool of a ``local-dev`` cluster, of a provider that
    runs no replicas, or any nodepool of a server that does not orchestrate (``providers``
    None)."""
    if providers is None or row.compute_cluster.cluster_type != "dedicated":
        return None
    provider = providers.get(row.compute_cluster.cloud_provider)
    return provider if provider is not None and provider.orchestrated else None


def info_of(row: NodepoolRow) -> NodepoolInfo:
    """The nodepool as its provider knows nodepools."""
    item = row.spec["instance_types"][0]
    return NodepoolInfo(
        pool=f"{row.user_id}/{row.compute_cluster_id}/{row.id}",
        region=row.compute_cluster.region,
        instance_type=str(item.get("id", "")),
        shape=shape_of(ComputeInfoSpec(**item["compute_info"])),
        min_instances=row.min_instances,
        max_instances=row.max_instances,
    )


def _resolve_instance_type(
    provider: Provider, region: str, item: InstanceTypeSpec, where: str
) -> InstanceTypeSpec:
    """Fill a bare instance type id from the provider's catalogue, and check the shape fits."""
    if item.compute_info is None:
        known = {t.id: t for t in provider.instance_types(region)}
        if item.id not in known:
            raise errors.NodepoolInvalid(
                f"{where}.id: instance type {item.id!r} is not offered by provider "
                f"{provider.id!r} in region {region!r}; use one of: {', '.join(known)} "
                "or give compute_info"
            )
        info = ComputeInfoSpec(**known[item.id].shape.compute_info())
        item = item.model_copy(update={"compute_info": info})
    assert item.compute_info is not None
    problems = provider.check_instance_type(region, item.id, shape_of(item.compute_info))
    if problems:
        raise errors.NodepoolInvalid(
            "; ".join(
                f"{where}.{name if name == 'id' else 'compute_info.' + name}: {reason}"
                for name, reason in problems
            )
        )
    return item


def _checked(
    spec: NodepoolSpec, cluster: ComputeClusterRow, providers: ProviderRegistry, where: str
) -> NodepoolSpec:
    provider = providers.get(cluster.cloud_provider)
    if provider is None:
        raise errors.NodepoolInvalid(
            f"compute cluster {cluster.id!r} uses provider {cluster.cloud_provider!r}, which "
            "this server no longer has; delete the cluster or restore the provider"
        )
    items = [
        _resolve_instance_type(provider, cluster.region, item, f"{where}.instance_types[{i}]")
        for i, item in enumerate(spec.instance_types)
    ]
    return spec.model_copy(update={"instance_types": items})


def create_nodepool(
    session: Session,
    cluster: ComputeClusterRow,
    spec: NodepoolSpec,
    providers: ProviderRegistry,
    where: str = "nodepool",
) -> NodepoolRow:
    ensure_id(spec.id, "nodepool id", errors.NodepoolInvalid, where)
    spec = _checked(spec, cluster, providers, where)
    if session.get(NodepoolRow, (cluster.user_id, cluster.id, spec.id)) is not None:
        raise errors.NodepoolConflict(
            f"nodepool {spec.id!r} already exists in compute cluster {cluster.id!r}; pick another "
            f"id or delete it with {cli_hint(f'nodepool delete {cluster.id} {spec.id}')}"
        )
    row = NodepoolRow(
        user_id=cluster.user_id,
        compute_cluster_id=cluster.id,
        id=spec.id,
        min_instances=spec.min_instances,
        max_instances=spec.max_instances,
        spec=spec.model_dump(exclude_none=True, exclude=_NOT_IN_SPEC),
    )
    session.add(row)
    session.flush()
    return row


def update_nodepool(
    session: Session,
    cluster: ComputeClusterRow,
    spec: NodepoolSpec,
    providers: ProviderRegistry,
    where: str,
) -> NodepoolRow:
    row = get_nodepool(session, cluster.user_id, cluster.id, spec.id)
    spec = _checked(spec, cluster, providers, where)
    row.min_instances, row.max_instances = spec.min_instances, spec.max_instances
    row.spec = spec.model_dump(exclude_none=True, exclude=_NOT_IN_SPEC)
    return row


def get_nodepool(session: Session, owner: str, cluster_id: str, nodepool_id: str) -> NodepoolRow:
    row = session.get(NodepoolRow, (owner, cluster_id, nodepool_id))
    if row is None:
        raise not_found(owner, cluster_id, nodepool_id)
    return row


def find_nodepool(session: Session, owner: str, cluster_id: str, nodepool_id: str) -> NodepoolRow:
    """A nodepool by id; without a cluster id, the user's only nodepool of that id."""
    if cluster_id:
        return get_nodepool(session, owner, cluster_id, nodepool_id)
    return only_one(
        session,
        select(NodepoolRow).where(NodepoolRow.user_id == owner, NodepoolRow.id == nodepool_id),
        missing=errors.NodepoolNotFound(
            f"nodepool {nodepool_id!r} not found for user {owner!r}; list them with "
            f"{cli_hint('nodepool list')}"
        ),
        ambiguous=errors.NodepoolInvalid(
            f"nodepool id {nodepool_id!r} exists in several compute clusters; name the cluster "
            "with compute_cluster: {id: ...}"
        ),
    )


def list_nodepools(session: Session, owner: str, cluster_id: str, page: Page) -> list[NodepoolRow]:
    query = select(NodepoolRow).where(NodepoolRow.user_id == owner)
    if cluster_id:
        query = query.where(NodepoolRow.compute_cluster_id == cluster_id)
    order = (NodepoolRow.compute_cluster_id, NodepoolRow.id)
    return list(session.scalars(page.apply(query.order_by(*order))))


def delete_nodepool_rows(session: Session, rows: list[NodepoolRow]) -> Removal:
    """Delete nodepools; each deployment loses them, and one left with none is deleted."""
    removal = Removal()
    touched: dict[tuple[str, str], DeploymentRow] = {}
    for row in rows:
        uses = session.scalars(
            select(DeploymentNodepoolRow).where(
                DeploymentNodepoolRow.user_id == row.user_id,
                DeploymentNodepoolRow.compute_cluster_id == row.compute_cluster_id,
                DeploymentNodepoolRow.nodepool_id == row.id,
            )
        )
        for use in uses:
            touched[(use.user_id, use.deployment_id)] = use.deployment
            use.deployment.placements.remove(use)
    session.flush()  # placements go before their nodepools, which the database would cascade
    for row in rows:
        removal.nodepools.append(f"{row.compute_cluster_id}/{row.id}")
        session.delete(row)
    for deployment in touched.values():
        if deployment.placements:
            removal.deployments_updated.append(deployment.id)
        else:
            removal.deployments_deleted.append(deployment.id)
            session.delete(deployment)
    session.flush()
    return removal
