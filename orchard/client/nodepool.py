"""``Nodepool``: machines of one shape inside a compute cluster; deployments point at it.

Deployments are user-scoped (api-notes 3.4): ``create_deployment``, ``deployment`` and
``delete_deployments`` address the user's deployments; only ``create_deployment`` (when the
config names no nodepool) and ``list_deployments`` use this nodepool.

A nodepool built without its ``compute_cluster_id`` finds its cluster when one is needed (the
server answers for the user's only nodepool of that id; an id held by several clusters is an
error that says so).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from clarifai_grpc.grpc.api.status import status_pb2

from orchard import configs, errors
from orchard.client import deployment as deployments
from orchard.client.deployment import Deployment
from orchard.client.lister import paginate
from orchard.client.resource import (
    Resource,
    build_proto,
    check_id_list,
    first_or,
    read_config_input,
    require_id,
)


class Nodepool(Resource):
    PROTO = resources_pb2.Nodepool
    NOUN = "nodepool"
    ID_ARG = "nodepool_id"
    REPR_FIELDS = ("compute_cluster.id", "min_instances", "max_instances")

    def __init__(
        self,
        nodepool_id: str | None = None,
        user_id: str | None = None,
        base_url: str | None = None,
        pat: str | None = None,
        compute_cluster_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(nodepool_id, user_id=user_id, base_url=base_url, pat=pat, **kwargs)
        if compute_cluster_id and not self.proto.compute_cluster.id:
            self.proto.compute_cluster.id = compute_cluster_id
        self._compute_cluster_id: str = compute_cluster_id or self.proto.compute_cluster.id

    @property
    def compute_cluster_id(self) -> str:
        """The cluster holding this nodepool (asked of the server if not given)."""
        if not self._compute_cluster_id:
            found = self._find_in_clusters()
            self.proto, self._loaded = found, True
            self._compute_cluster_id = found.compute_cluster.id
        return self._compute_cluster_id

    def _find_in_clusters(self) -> Any:
        # GetNodepool without a cluster id answers the user's only nodepool of that id (or a
        # clear error when none or several clusters hold one).
        request = service_pb2.GetNodepoolRequest(
            user_app_id=self._user_app_id(), nodepool_id=self.id
        )
        return self._call("GetNodepool", request).nodepool

    def _get(self) -> Any:
        request = service_pb2.GetNodepoolRequest(
            user_app_id=self._user_app_id(),
            compute_cluster_id=self.compute_cluster_id,
            nodepool_id=self.id,
        )
        return self._call("GetNodepool", request).nodepool

    def create_deployment(
        self,
        config_filepath: str | Path | None = None,
        deployment_id: str | None = None,
        deployment_config: Mapping[str, Any] | None = None,
    ) -> Deployment:
        """Create a deployment from a YAML file (top key ``deployment``) or a dict.

        The ``deployment_id`` argument wins over the config's id. A config without nodepools
        deploys into this nodepool. Owners left out (the deployment's, each nodepool's cluster's,
        the model's) default to this client's user.
        """
        data = read_config_input(
            config_filepath, deployment_config, "deployment", errors.DeploymentInvalid
        )
        require_id(deployment_id, data, "deployment", "deployment_id", "deployment")
        if not data.get("nodepools") and not data.get("deployment_nodepools"):
            cluster = {"id": self.compute_cluster_id}
            data["nodepools"] = [{"id": self.id, "compute_cluster": cluster}]
        _default_owners(data, self.user_id)
        proto = build_proto(
            configs.DeploymentSpec,
            data,
            resources_pb2.Deployment(),
            where="deployment",
            error=errors.DeploymentInvalid,
        )
        request = service_pb2.PostDeploymentsRequest(
            user_app_id=self._user_app_id(), deployments=[proto]
        )
        response = self._call("PostDeployments", request)
        return Deployment._from_proto(first_or(response.deployments, proto), self)

    def list_deployments(
        self,
        filter_by: Mapping[str, Any] | None = None,
        page_no: int | None = None,
        per_page: int | None = None,
    ) -> Iterator[Deployment]:
        """Deployments placed in this nodepool; ``filter_by`` adds ListDeployments filters
        (``model_version_ids``, ``compute_cluster_id``, ...)."""
        filters = {"nodepool_id": self.id, **dict(filter_by or {})}
        if self._compute_cluster_id:
            filters.setdefault("compute_cluster_id", self._compute_cluster_id)
        return deployments.list_deployments(self, filters, page_no, per_page)

    def deployment(self, deployment_id: str) -> Deployment:
        """The user's deployment ``deployment_id`` (GetDeployment)."""
        return deployments.get_deployment(self, deployment_id)

    def delete_deployments(self, deployment_ids: list[str]) -> status_pb2.Status:
        """Delete the user's deployments; returns the server's status (``details`` says what)."""
        return deployments.delete_deployments(self, deployment_ids)

    @staticmethod
    def get_runner_selector(
        user_id: str, compute_cluster_id: str, nodepool_id: str
    ) -> resources_pb2.RunnerSelector:
        """The selector that routes a prediction to this nodepool."""
        cluster = resources_pb2.ComputeCluster(id=compute_cluster_id, user_id=user_id)
        return resources_pb2.RunnerSelector(
            nodepool=resources_pb2.Nodepool(id=nodepool_id, compute_cluster=cluster)
        )

    # -- runners (what replica processes attach to) ----------------------------------------

    def create_runner(self, runner_config: Mapping[str, Any]) -> resources_pb2.Runner:
        """Create a runner in this nodepool from ``{"runner": {...}}`` or its inner mapping
        (``worker``, ``num_replicas``, ``description``); the id is made by the server."""
        data = dict(runner_config.get("runner", runner_config))
        proto = build_proto(
            configs.RunnerSpec,
            data,
            resources_pb2.Runner(),
            where="runner",
            error=errors.RunnerInvalid,
        )
        request = service_pb2.PostRunnersRequest(
            user_app_id=self._user_app_id(),
            compute_cluster_id=self.compute_cluster_id,
            nodepool_id=self.id,
            runners=[proto],
        )
        return self._call("PostRunners", request).runners[0]

    def list_runners(
        self,
        model_version_ids: list[str] | None = None,
        page_no: int | None = None,
        per_page: int | None = None,
    ) -> Iterator[resources_pb2.Runner]:
        def fetch(page: int, size: int) -> Any:
            request = service_pb2.ListRunnersRequest(
                user_app_id=self._user_app_id(),
                compute_cluster_id=self.compute_cluster_id,
                nodepool_id=self.id,
                model_version_ids=model_version_ids or [],
                page=page,
                per_page=size,
            )
            return self._call("ListRunners", request).runners

        return paginate(fetch, page_no, per_page)

    def delete_runners(self, runner_ids: list[str]) -> status_pb2.Status:
        request = service_pb2.DeleteRunnersRequest(
            user_app_id=self._user_app_id(),
            compute_cluster_id=self.compute_cluster_id,
            nodepool_id=self.id,
            ids=check_id_list(runner_ids, "runner_ids"),
        )
        return self._call("DeleteRunners", request).status


def _default_owners(data: dict[str, Any], user_id: str) -> None:
    """Fill the owner ids a deployment config may leave out (all default to the caller)."""
    if not data.get("user_id"):
        data["user_id"] = user_id
    refs = list(data.get("nodepools") or []) + list(data.get("deployment_nodepools") or [])
    for ref in refs:
        for holder in (ref, ref.get("nodepool") if isinstance(ref, dict) else None):
            cluster = holder.get("compute_cluster") if isinstance(holder, dict) else None
            if isinstance(cluster, dict) and not cluster.get("user_id"):
                cluster["user_id"] = user_id
    for worker_key in ("worker", "desired_worker"):
        worker = data.get(worker_key)
        model = worker.get("model") if isinstance(worker, dict) else None
        if isinstance(model, dict) and not model.get("user_id"):
            model["user_id"] = user_id
