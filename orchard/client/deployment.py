"""``Deployment``: one model deployed into one or more nodepools; owned by a user.

A ``Deployment`` built by hand loads itself lazily: the first attribute that falls through to
the protobuf (``dep.autoscale_config``, ``dep.worker``) issues one GetDeployment.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from clarifai_grpc.grpc.api.status import status_pb2
from google.protobuf import json_format

from orchard import errors
from orchard.client.base import BaseClient
from orchard.client.lister import paginate
from orchard.client.logs import LogReader
from orchard.client.resource import Resource, check_id_list


class Deployment(Resource):
    PROTO = resources_pb2.Deployment
    NOUN = "deployment"
    ID_ARG = "deployment_id"
    REPR_FIELDS = ("worker.model.id", "worker.model.model_version.id", "status")

    def __init__(
        self,
        deployment_id: str | None = None,
        user_id: str | None = None,
        base_url: str | None = None,
        pat: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(deployment_id, user_id=user_id, base_url=base_url, pat=pat, **kwargs)

    def _get(self) -> Any:
        request = service_pb2.GetDeploymentRequest(
            user_app_id=self._user_app_id(), deployment_id=self.id
        )
        return self._call("GetDeployment", request).deployment

    def update(self, action: str = "overwrite", **fields: Any) -> Deployment:
        """Change this deployment (PatchDeployments); ``fields`` are Deployment fields as a
        config writes them, e.g. ``desired_worker={"model": {...}}`` or ``status=1``."""
        change = json_format.ParseDict({"id": self.id, **fields}, resources_pb2.Deployment())
        request = service_pb2.PatchDeploymentsRequest(
            user_app_id=self._user_app_id(), action=action, deployments=[change]
        )
        self.proto = self._call("PatchDeployments", request).deployments[0]
        self._loaded = True
        return self

    def log_reader(self, log_type: str = "runner") -> LogReader:
        """A reader of this deployment's replica output (``runner``) or orchestration events
        (``runner.events``); each ``read()`` returns the lines written since the last."""
        model = self.proto.worker.model
        request = service_pb2.ListLogEntriesRequest(
            user_app_id=resources_pb2.UserAppIDSet(
                user_id=model.user_id or self.user_id, app_id=model.app_id
            ),
            model_id=model.id,
            model_version_id=model.model_version.id,
            log_type=log_type,
        )
        if len(self.proto.nodepools) == 1:
            request.compute_cluster_id = self.proto.nodepools[0].compute_cluster.id
            request.nodepool_id = self.proto.nodepools[0].id
        return LogReader(self, request)

    @staticmethod
    def get_runner_selector(user_id: str, deployment_id: str) -> resources_pb2.RunnerSelector:
        """The selector that routes a prediction to this deployment."""
        return resources_pb2.RunnerSelector(
            deployment=resources_pb2.Deployment(id=deployment_id, user_id=user_id)
        )


# Deployments are user-scoped: User and Nodepool share these calls.


def list_deployments(
    client: BaseClient, filters: Mapping[str, Any], page_no: int | None, per_page: int | None
) -> Iterator[Deployment]:
    def fetch(page: int, size: int) -> Any:
        try:
            request = service_pb2.ListDeploymentsRequest(
                user_app_id=client._user_app_id(), page=page, per_page=size, **filters
            )
        except (TypeError, ValueError) as exc:  # an unknown filter name or a wrong value type
            raise errors.UserError(
                f"invalid deployment filter: {exc}; use nodepool_id, compute_cluster_id, "
                "model_version_ids, workflow_version_ids or scheduling_priorities"
            ) from None
        return client._call("ListDeployments", request).deployments

    return (Deployment._from_proto(d, client) for d in paginate(fetch, page_no, per_page))


def get_deployment(client: BaseClient, deployment_id: str) -> Deployment:
    return Deployment(deployment_id, _client=client).refresh()


def delete_deployments(client: BaseClient, deployment_ids: list[str]) -> status_pb2.Status:
    request = service_pb2.DeleteDeploymentsRequest(
        user_app_id=client._user_app_id(), ids=check_id_list(deployment_ids, "deployment_ids")
    )
    return client._call("DeleteDeployments", request).status
