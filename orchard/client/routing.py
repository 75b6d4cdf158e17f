"""Where a prediction runs: a ``RunnerSelector`` naming a deployment, or a nodepool of a compute
cluster (api-notes 3.5, 6).

Routing arguments come in two forms, both accepted: on the ``Model`` constructor (SDK ≥ 11.3:
``deployment_id``, ``compute_cluster_id``, ``nodepool_id``, ``deployment_user_id``) and on each
``*_by_*`` call (SDK ≤ 11.2: the same ids, with ``user_id`` for the owner). A call's own
routing replaces the constructor's. The owner of the deployment or cluster defaults to the
caller (the owner of the PAT), not to the model's owner.

:func:`route_from` is pure: it checks the arguments and says which route they name.
:class:`SelectorCache` confirms a route once with the server (GetDeployment or GetNodepool, as the
official SDK does at construction) and keeps the selector.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

from clarifai_grpc.grpc.api import resources_pb2, service_pb2

from orchard import errors
from orchard.client.base import BaseClient
from orchard.client.deployment import Deployment
from orchard.client.nodepool import Nodepool


class RoutingArgs(TypedDict, total=False):
    """The per-call routing keywords of the ``*_by_*`` methods."""

    deployment_id: str | None
    compute_cluster_id: str | None
    nodepool_id: str | None
    deployment_user_id: str | None
    user_id: str | None  # the SDK ≤ 11.2 name of the owner of the deployment or cluster


ROUTING_ARGS = frozenset(RoutingArgs.__annotations__)
CONFLICT = "You can only specify one of deployment_id or compute_cluster_id and nodepool_id."


@dataclass(frozen=True)
class Route:
    """A deployment, or a nodepool (its cluster may be left for the server to find)."""

    deployment_id: str = ""
    compute_cluster_id: str = ""
    nodepool_id: str = ""
    owner: str = ""  # the user owning the deployment or cluster; "" = the caller


def route_from(args: Mapping[str, Any]) -> Route | None:
    """The route the routing arguments name, or None for none. Raises UserError."""
    unknown = sorted(set(args) - ROUTING_ARGS)
    if unknown:
        raise errors.UserError(
            f"unexpected argument(s) {unknown}; routing takes {', '.join(sorted(ROUTING_ARGS))}"
        )
    deployment = args.get("deployment_id") or ""
    cluster = args.get("compute_cluster_id") or ""
    nodepool = args.get("nodepool_id") or ""
    owner = args.get("deployment_user_id") or args.get("user_id") or ""
    if deployment and (cluster or nodepool):
        raise errors.UserError(
            f"{CONFLICT} Got deployment_id={deployment!r} and "
            f"{'compute_cluster_id' if cluster else 'nodepool_id'}={cluster or nodepool!r}; "
            "drop one of them."
        )
    if cluster and not nodepool:
        raise errors.UserError(
            f"compute_cluster_id={cluster!r} needs nodepool_id (the nodepool to run in), "
            "or give deployment_id instead"
        )
    if not (deployment or nodepool):
        return None
    return Route(deployment, cluster, nodepool, owner)


class SelectorCache:
    """Turns routes into selectors, confirming each with the server once."""

    def __init__(self, client: BaseClient, caller_id: Callable[[], str]) -> None:
        self._client = client
        self._caller_id = caller_id
        self._selectors: dict[Route, resources_pb2.RunnerSelector] = {}

    def selector(self, route: Route | None) -> resources_pb2.RunnerSelector | None:
        if route is None:
            return None
        if route not in self._selectors:
            owner = route.owner or self._caller_id()
            confirm = self._deployment if route.deployment_id else self._nodepool
            self._selectors[route] = confirm(route, owner)
        return self._selectors[route]

    def _deployment(self, route: Route, owner: str) -> resources_pb2.RunnerSelector:
        request = service_pb2.GetDeploymentRequest(
            user_app_id=resources_pb2.UserAppIDSet(user_id=owner),
            deployment_id=route.deployment_id,
        )
        try:
            self._client._call("GetDeployment", request)
        except errors.DeploymentNotFound as exc:
            raise errors.DeploymentNotFound(
                f"Deployment {route.deployment_id!r} not found for user_id {owner!r}; list "
                "them with `orchard deployment list` (for another user's deployment pass "
                "deployment_user_id=)",
            ) from exc
        return Deployment.get_runner_selector(owner, route.deployment_id)

    def _nodepool(self, route: Route, owner: str) -> resources_pb2.RunnerSelector:
        request = service_pb2.GetNodepoolRequest(
            user_app_id=resources_pb2.UserAppIDSet(user_id=owner),
            compute_cluster_id=route.compute_cluster_id,
            nodepool_id=route.nodepool_id,
        )
        try:
            found = self._client._call("GetNodepool", request).nodepool
        except errors.NodepoolNotFound as exc:
            cluster = route.compute_cluster_id
            where = f"compute cluster {cluster!r}" if cluster else "any of their compute clusters"
            raise errors.NodepoolNotFound(
                f"Nodepool {route.nodepool_id!r} not found for user_id {owner!r} in {where}; "
                f"list them with `orchard nodepool list {cluster or 'COMPUTE_CLUSTER_ID'}`",
            ) from exc
        cluster = route.compute_cluster_id or found.compute_cluster.id
        return Nodepool.get_runner_selector(owner, cluster, route.nodepool_id)
