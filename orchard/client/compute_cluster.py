"""``ComputeCluster``: where instances come from (a provider and a region); holds nodepools.

A ``ComputeCluster`` built by hand loads itself lazily: the first attribute that falls through
to the protobuf (``cc.region``) issues one GetComputeCluster.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from clarifai_grpc.grpc.api.status import status_pb2

from orchard import configs, errors
from orchard.client.lister import paginate
from orchard.client.nodepool import Nodepool
from orchard.client.resource import (
    Resource,
    build_proto,
    check_id_list,
    first_or,
    read_config_input,
    require_id,
)


class ComputeCluster(Resource):
    PROTO = resources_pb2.ComputeCluster
    NOUN = "compute cluster"
    ID_ARG = "compute_cluster_id"
    REPR_FIELDS = ("cloud_provider.id", "region", "cluster_type")

    def __init__(
        self,
        compute_cluster_id: str | None = None,
        user_id: str | None = None,
        base_url: str | None = None,
        pat: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(compute_cluster_id, user_id=user_id, base_url=base_url, pat=pat, **kwargs)

    def _get(self) -> Any:
        request = service_pb2.GetComputeClusterRequest(
            user_app_id=self._user_app_id(), compute_cluster_id=self.id
        )
        return self._call("GetComputeCluster", request).compute_cluster

    def _nodepool(self, proto: Any) -> Nodepool:
        return Nodepool._from_proto(proto, self, compute_cluster_id=self.id)

    def create_nodepool(
        self,
        config_filepath: str | Path | None = None,
        nodepool_id: str | None = None,
        nodepool_config: Mapping[str, Any] | None = None,
    ) -> Nodepool:
        """Create a nodepool in this cluster from a YAML file (top key ``nodepool``) or a dict.

        The ``nodepool_id`` argument wins over the config's id; the config's ``compute_cluster``
        is replaced by this cluster.
        """
        data = read_config_input(
            config_filepath, nodepool_config, "nodepool", errors.NodepoolInvalid
        )
        require_id(nodepool_id, data, "nodepool", "nodepool_id", "nodepool")
        data["compute_cluster"] = {"id": self.id, "user_id": self.user_id}
        proto = build_proto(
            configs.NodepoolSpec,
            data,
            resources_pb2.Nodepool(),
            where="nodepool",
            error=errors.NodepoolInvalid,
        )
        request = service_pb2.PostNodepoolsRequest(
            user_app_id=self._user_app_id(), compute_cluster_id=self.id, nodepools=[proto]
        )
        response = self._call("PostNodepools", request)
        return self._nodepool(first_or(response.nodepools, proto))

    def list_nodepools(
        self, page_no: int | None = None, per_page: int | None = None
    ) -> Iterator[Nodepool]:
        """The nodepools of this cluster (see ``orchard.client.lister`` for paging)."""

        def fetch(page: int, size: int) -> Any:
            request = service_pb2.ListNodepoolsRequest(
                user_app_id=self._user_app_id(),
                compute_cluster_id=self.id,
                page=page,
                per_page=size,
            )
            return self._call("ListNodepools", request).nodepools

        return (self._nodepool(np) for np in paginate(fetch, page_no, per_page))

    def nodepool(self, nodepool_id: str) -> Nodepool:
        """The nodepool ``nodepool_id`` of this cluster (GetNodepool)."""
        request = service_pb2.GetNodepoolRequest(
            user_app_id=self._user_app_id(), compute_cluster_id=self.id, nodepool_id=nodepool_id
        )
        return self._nodepool(self._call("GetNodepool", request).nodepool)

    def delete_nodepools(self, nodepool_ids: list[str]) -> status_pb2.Status:
        """Delete nodepools of this cluster (and their deployments' placements); returns the
        server's status (``details`` says what was removed)."""
        request = service_pb2.DeleteNodepoolsRequest(
            user_app_id=self._user_app_id(),
            compute_cluster_id=self.id,
            ids=check_id_list(nodepool_ids, "nodepool_ids"),
        )
        return self._call("DeleteNodepools", request).status
