"""``User``: the entry point of the SDK. Creates and finds compute clusters, lists what the user
owns across clusters, and manages apps and personal access tokens.

    from orchard import User
    user = User(user_id="alice", base_url="http://127.0.0.1:7600", pat="...")
    cc = user.create_compute_cluster(config_filepath="cluster.yaml", compute_cluster_id="local-cc")
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from clarifai_grpc.grpc.api.status import status_pb2

from orchard import configs, errors
from orchard.client import deployment as deployments
from orchard.client.app import App
from orchard.client.base import CLIENT_KWARGS, BaseClient
from orchard.client.compute_cluster import ComputeCluster
from orchard.client.deployment import Deployment
from orchard.client.lister import paginate
from orchard.client.nodepool import Nodepool
from orchard.client.resource import (
    build_proto,
    check_id_list,
    first_or,
    read_config_input,
    require_id,
)

PAT_KEY_TYPE = "personal_access_token"


class User(BaseClient):
    def __init__(
        self,
        user_id: str | None = None,
        base_url: str | None = None,
        pat: str | None = None,
        **kwargs: Any,
    ) -> None:
        unknown = sorted(set(kwargs) - CLIENT_KWARGS)
        if unknown:
            raise errors.UserError(f"User got unknown arguments: {', '.join(unknown)}")
        super().__init__(user_id, base_url, pat, **kwargs)

    def __repr__(self) -> str:
        return f"User(user_id={self._user_id or '(from PAT)'!r}, base_url={self.base_url!r})"

    # -- compute clusters --------------------------------------------------------------------

    def create_compute_cluster(
        self,
        config_filepath: str | Path | None = None,
        compute_cluster_id: str | None = None,
        compute_cluster_config: Mapping[str, Any] | None = None,
    ) -> ComputeCluster:
        """Create a compute cluster from a YAML file (top key ``compute_cluster``) or a dict.

        The config is validated before anything is sent; ``compute_cluster_id`` wins over the
        config's id.
        """
        data = read_config_input(
            config_filepath, compute_cluster_config, "compute_cluster", errors.ComputeClusterInvalid
        )
        require_id(
            compute_cluster_id, data, "compute cluster", "compute_cluster_id", "compute_cluster"
        )
        proto = build_proto(
            configs.ComputeClusterSpec,
            data,
            resources_pb2.ComputeCluster(),
            where="compute_cluster",
            error=errors.ComputeClusterInvalid,
        )
        request = service_pb2.PostComputeClustersRequest(
            user_app_id=self._user_app_id(), compute_clusters=[proto]
        )
        response = self._call("PostComputeClusters", request)
        return ComputeCluster._from_proto(first_or(response.compute_clusters, proto), self)

    def list_compute_clusters(
        self, page_no: int | None = None, per_page: int | None = None
    ) -> Iterator[ComputeCluster]:
        def fetch(page: int, size: int) -> Any:
            request = service_pb2.ListComputeClustersRequest(
                user_app_id=self._user_app_id(), page=page, per_page=size
            )
            return self._call("ListComputeClusters", request).compute_clusters

        return (ComputeCluster._from_proto(cc, self) for cc in paginate(fetch, page_no, per_page))

    def compute_cluster(self, compute_cluster_id: str) -> ComputeCluster:
        """The compute cluster ``compute_cluster_id`` (GetComputeCluster)."""
        return ComputeCluster(compute_cluster_id, _client=self).refresh()

    def delete_compute_clusters(self, compute_cluster_ids: list[str]) -> status_pb2.Status:
        """Delete clusters with their nodepools, placements and runners; returns the server's
        status (``details`` says what was removed)."""
        request = service_pb2.DeleteComputeClustersRequest(
            user_app_id=self._user_app_id(),
            ids=check_id_list(compute_cluster_ids, "compute_cluster_ids"),
        )
        return self._call("DeleteComputeClusters", request).status

    # -- across clusters -----------------------------------------------------------------------

    def list_nodepools(
        self, page_no: int | None = None, per_page: int | None = None
    ) -> Iterator[Nodepool]:
        """The nodepools of all the user's clusters (ListNodepools without compute_cluster_id)."""

        def fetch(page: int, size: int) -> Any:
            request = service_pb2.ListNodepoolsRequest(
                user_app_id=self._user_app_id(), page=page, per_page=size
            )
            return self._call("ListNodepools", request).nodepools

        return (Nodepool._from_proto(np, self) for np in paginate(fetch, page_no, per_page))

    def list_deployments(
        self,
        filter_by: Mapping[str, Any] | None = None,
        page_no: int | None = None,
        per_page: int | None = None,
    ) -> Iterator[Deployment]:
        """The user's deployments across all nodepools (ListDeployments without nodepool_id)."""
        return deployments.list_deployments(self, dict(filter_by or {}), page_no, per_page)

    def deployment(self, deployment_id: str) -> Deployment:
        """The deployment ``deployment_id`` (GetDeployment)."""
        return deployments.get_deployment(self, deployment_id)

    def delete_deployments(self, deployment_ids: list[str]) -> status_pb2.Status:
        """Delete deployments (user-scoped: no nodepool needed); returns the server's status."""
        return deployments.delete_deployments(self, deployment_ids)

    # -- catalogue -----------------------------------------------------------------------------

    def list_cloud_providers(self) -> list[resources_pb2.CloudProvider]:
        response = self._call("ListCloudProviders", service_pb2.ListCloudProvidersRequest())
        return list(response.cloud_providers)

    def list_cloud_regions(self, cloud_provider_id: str) -> list[str]:
        """Region ids of a provider."""
        request = service_pb2.ListCloudRegionsRequest(
            cloud_provider=resources_pb2.CloudProvider(id=cloud_provider_id)
        )
        response = self._call("ListCloudRegions", request)
        return [region.id for region in response.cloud_regions] or list(response.regions)

    def list_instance_types(
        self, cloud_provider_id: str, region: str
    ) -> list[resources_pb2.InstanceType]:
        request = service_pb2.ListInstanceTypesRequest(
            cloud_provider=resources_pb2.CloudProvider(id=cloud_provider_id), region=region
        )
        return list(self._call("ListInstanceTypes", request).instance_types)

    # -- the user, apps, PATs ------------------------------------------------------------------

    def get_user_info(self, user_id: str | None = None) -> resources_pb2.User:
        """The user ``user_id`` (default: this client's user) as the server describes it."""
        request = service_pb2.GetUserRequest(
            user_app_id=resources_pb2.UserAppIDSet(user_id=user_id or self.user_id)
        )
        return self._call("GetUser", request).user

    def create_app(self, app_id: str, description: str = "", **fields: Any) -> App:
        """Create an app; ``fields`` are further ``App`` protobuf fields."""
        if not app_id:
            raise errors.UserError("create_app needs app_id")
        try:
            proto = resources_pb2.App(id=app_id, description=description, **fields)
        except (TypeError, ValueError) as exc:
            raise errors.UserError(f"create_app: {exc}; pass only fields of App") from None
        request = service_pb2.PostAppsRequest(user_app_id=self._user_app_id(), apps=[proto])
        return App._from_proto(first_or(self._call("PostApps", request).apps, proto), self)

    def app(self, app_id: str) -> App:
        """The app ``app_id`` (GetApp)."""
        return App(app_id, _client=self).refresh()

    def list_apps(self, page_no: int | None = None, per_page: int | None = None) -> Iterator[App]:
        def fetch(page: int, size: int) -> Any:
            request = service_pb2.ListAppsRequest(
                user_app_id=self._user_app_id(), page=page, per_page=size
            )
            return self._call("ListApps", request).apps

        return (App._from_proto(app, self) for app in paginate(fetch, page_no, per_page))

    def create_pat(self, description: str = "") -> resources_pb2.Key:
        """Create a personal access token. The returned key's ``id`` is the secret token; the
        server shows it only this once."""
        key = resources_pb2.Key(type=PAT_KEY_TYPE, description=description)
        request = service_pb2.PostKeysRequest(user_app_id=self._user_app_id(), keys=[key])
        keys = self._call("PostKeys", request).keys
        if not keys:
            raise errors.InternalError("the server created a PAT but did not return it")
        return keys[0]

    def list_pats(
        self, page_no: int | None = None, per_page: int | None = None
    ) -> Iterator[resources_pb2.Key]:
        """The user's keys (the server shows each PAT's id, never a stored secret)."""

        def fetch(page: int, size: int) -> Any:
            request = service_pb2.ListKeysRequest(
                user_app_id=self._user_app_id(), page=page, per_page=size
            )
            return self._call("ListKeys", request).keys

        return paginate(fetch, page_no, per_page)

    def delete_pat(self, pat_id: str) -> status_pb2.Status:
        request = service_pb2.DeleteKeyRequest(user_app_id=self._user_app_id(), key_id=pat_id)
        return self._call("DeleteKey", request).status
