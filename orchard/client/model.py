"""``Model``: a model in one of the user's apps, and its versions.

Prediction (``predict_by_*``, ``generate_by_*``, ``stream_by_*``) arrives with the data plane;
this client covers what the control plane needs: the model and versions to deploy.
A ``Model`` built by hand loads itself lazily (one GetModel).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from clarifai_grpc.grpc.api import resources_pb2, service_pb2

from orchard import errors
from orchard.client.lister import paginate
from orchard.client.resource import Resource


class Model(Resource):
    PROTO = resources_pb2.Model
    NOUN = "model"
    ID_ARG = "model_id"
    REPR_FIELDS = ("app_id", "model_type_id", "model_version.id")

    def __init__(
        self,
        model_id: str | None = None,
        user_id: str | None = None,
        app_id: str | None = None,
        base_url: str | None = None,
        pat: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_id, user_id=user_id, base_url=base_url, pat=pat, **kwargs)
        app: str = app_id or self.proto.app_id
        if not app:
            raise errors.UserError("Model needs app_id (the app the model lives in)")
        self.app_id = app

    def _get(self) -> Any:
        request = service_pb2.GetModelRequest(
            user_app_id=self._user_app_id(self.app_id), model_id=self.id
        )
        return self._call("GetModel", request).model

    def create_version(self, **fields: Any) -> resources_pb2.ModelVersion:
        """A new version without an uploaded package (as the local-runner flow makes them);
        ``fields`` are ``ModelVersion`` protobuf fields. Returns the version."""
        try:
            version = resources_pb2.ModelVersion(**fields)
        except (TypeError, ValueError) as exc:
            raise errors.UserError(f"create_version: {exc}; pass ModelVersion fields") from None
        request = service_pb2.PostModelVersionsRequest(
            user_app_id=self._user_app_id(self.app_id), model_id=self.id, model_versions=[version]
        )
        self.proto = self._call("PostModelVersions", request).model
        self._loaded = True
        return self.proto.model_version

    def list_versions(
        self, page_no: int | None = None, per_page: int | None = None
    ) -> Iterator[resources_pb2.ModelVersion]:
        """The model's versions, newest first."""

        def fetch(page: int, size: int) -> Any:
            request = service_pb2.ListModelVersionsRequest(
                user_app_id=self._user_app_id(self.app_id),
                model_id=self.id,
                page=page,
                per_page=size,
            )
            return self._call("ListModelVersions", request).model_versions

        return paginate(fetch, page_no, per_page)
