"""``App``: a user's container for models. Built by hand it loads lazily (one GetApp)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from clarifai_grpc.grpc.api import resources_pb2, service_pb2

from orchard import errors
from orchard.client.lister import paginate
from orchard.client.model import Model
from orchard.client.resource import Resource


class App(Resource):
    PROTO = resources_pb2.App
    NOUN = "app"
    ID_ARG = "app_id"
    REPR_FIELDS = ("description",)

    def __init__(
        self,
        app_id: str | None = None,
        user_id: str | None = None,
        base_url: str | None = None,
        pat: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(app_id, user_id=user_id, base_url=base_url, pat=pat, **kwargs)

    def _get(self) -> Any:
        request = service_pb2.GetAppRequest(user_app_id=self._user_app_id(self.id))
        return self._call("GetApp", request).app

    def create_model(
        self, model_id: str, model_type_id: str = "any-to-any", **fields: Any
    ) -> Model:
        """Create a model in this app; ``fields`` are further ``Model`` protobuf fields."""
        try:
            proto = resources_pb2.Model(id=model_id, model_type_id=model_type_id, **fields)
        except (TypeError, ValueError) as exc:
            raise errors.UserError(f"create_model: {exc}; pass only fields of Model") from None
        request = service_pb2.PostModelsRequest(
            user_app_id=self._user_app_id(self.id), models=[proto]
        )
        created = self._call("PostModels", request).model
        return Model._from_proto(created, self, app_id=self.id)

    def model(self, model_id: str) -> Model:
        """The model ``model_id`` of this app (GetModel)."""
        return Model(model_id=model_id, app_id=self.id, _client=self).refresh()

    def list_models(
        self, page_no: int | None = None, per_page: int | None = None
    ) -> Iterator[Model]:
        def fetch(page: int, size: int) -> Any:
            request = service_pb2.ListModelsRequest(
                user_app_id=self._user_app_id(self.id), page=page, per_page=size
            )
            return self._call("ListModels", request).models

        return (
            Model._from_proto(m, self, app_id=self.id) for m in paginate(fetch, page_no, per_page)
        )

    def delete_model(self, model_id: str) -> Any:
        """Delete a model of this app with its versions; returns the server's status."""
        request = service_pb2.DeleteModelRequest(
            user_app_id=self._user_app_id(self.id), model_id=model_id
        )
        return self._call("DeleteModel", request).status
