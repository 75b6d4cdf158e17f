"""``App``: a user's container for models. Built by hand it loads lazily (one GetApp)."""

from __future__ import annotations

from typing import Any

from clarifai_grpc.grpc.api import resources_pb2, service_pb2

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
