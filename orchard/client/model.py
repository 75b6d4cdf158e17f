"""``Model``: a model in one of the user's apps, its versions, and predictions with it.

A ``Model`` is named by a URL (``https://HOST/USER_ID/APP_ID/models/MODEL_ID[/versions/V]``,
the host optional) or by ``model_id`` + ``app_id`` (+ ``user_id``, default the caller). Built by
hand it loads itself lazily (one GetModel); routing given to the constructor is confirmed at
once (GetDeployment or GetNodepool, as the official SDK does), see :mod:`orchard.client.routing`.

Predictions, in the official SDK's shapes:

- ``predict_by_url / _bytes / _filepath`` → PostModelOutputs; returns the ``MultiOutputResponse``
  (``response.outputs[0].data.text.raw``).
- ``generate_by_*`` → GenerateModelOutputs; ``stream_by_*`` → StreamModelOutputs (one request
  holding one input per item); both return an iterator of responses.
- Any other attribute names one of the model's own methods (the typed client,
  :mod:`orchard.client.methods`): ``model.predict(prompt="hi")``, ``model.generate(...)``.

Every helper takes ``input_type`` (image, text, video, audio; default: from the model type),
``inference_params`` (→ ``output_info.params``), ``output_config``, ``method`` (a method name to
send in ``_method_name``; default none: the server picks the method named like the call) and the
per-call routing keywords (``deployment_id``, ``compute_cluster_id``, ``nodepool_id``,
``user_id``), which replace the constructor's routing for that call. Waiting for a deploying
model and error statuses: :mod:`orchard.client.predictions`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Unpack

from clarifai_grpc.grpc.api import resources_pb2, service_pb2

from orchard import errors
from orchard.client import predictions as pr
from orchard.client.lister import paginate
from orchard.client.methods import GET_SIGNATURES, ModelMethod, signature_text, signatures_from_json
from orchard.client.resource import Resource
from orchard.client.routing import Route, RoutingArgs, SelectorCache, route_from
from orchard.ids import ModelRef, model_ref

Params = Mapping[str, Any] | None


def parse_model_url(url: str) -> ModelRef:
    """``https://HOST/USER/APP/models/MODEL[/versions/VERSION]`` (any host, or none)."""
    found = model_ref(url)
    if found is None:
        raise errors.UserError(
            f"{url!r} is not a model URL; expected https://HOST/USER_ID/APP_ID/models/MODEL_ID"
            "[/versions/VERSION_ID] or USER_ID/APP_ID/models/MODEL_ID, or pass model_id= and "
            "app_id= instead"
        )
    return found


class Model(Resource):
    PROTO = resources_pb2.Model
    NOUN = "model"
    ID_ARG = "model_id"
    REPR_FIELDS = ("app_id", "model_type_id", "model_version.id")

    def __init__(
        self,
        url: str | None = None,
        model_id: str | None = None,
        user_id: str | None = None,
        app_id: str | None = None,
        base_url: str | None = None,
        pat: str | None = None,
        model_version: Mapping[str, Any] | str | None = None,
        deployment_id: str | None = None,
        compute_cluster_id: str | None = None,
        nodepool_id: str | None = None,
        deployment_user_id: str | None = None,
        retry_timeout: float = 600.0,
        **kwargs: Any,
    ) -> None:
        ref = _model_ref(url, model_id, user_id, app_id, model_version, kwargs)
        super().__init__(ref.model_id, user_id=ref.user_id, base_url=base_url, pat=pat, **kwargs)
        app: str = ref.app_id or self.proto.app_id
        if not app:
            raise errors.UserError("Model needs app_id (the app the model lives in)")
        self.app_id = app
        self.version_id = ref.version_id  # "" = the latest version
        if not self._loaded:
            self.proto.app_id = app
            self.proto.model_version.id = ref.version_id
        self.retry = pr.Retry(timeout_s=retry_timeout)
        self._caller: str | None = None
        self._selectors = SelectorCache(self, self._caller_id)
        self._route = route_from(
            {
                "deployment_id": deployment_id,
                "compute_cluster_id": compute_cluster_id,
                "nodepool_id": nodepool_id,
                "deployment_user_id": deployment_user_id,
            }
        )
        self._typed: dict[str, ModelMethod] | None = None
        self.runner_selector = self._selectors.selector(self._route)

    def _get(self) -> Any:
        request = service_pb2.GetModelRequest(
            user_app_id=self._user_app_id(self.app_id), model_id=self.id, version_id=self.version_id
        )
        return self._call("GetModel", request).model

    # -- versions ------------------------------------------------------------------------------

    def version(self, version_id: str) -> resources_pb2.ModelVersion:
        """One version of this model, with its status and method signatures."""
        request = service_pb2.GetModelVersionRequest(
            user_app_id=self._user_app_id(self.app_id), model_id=self.id, version_id=version_id
        )
        return self._call("GetModelVersion", request).model_version

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

    # -- predict: one request, one response ----------------------------------------------------

    def predict_by_url(
        self,
        url: str,
        input_type: str | None = None,
        inference_params: Params = None,
        output_config: Params = None,
        *,
        method: str | None = None,
        **routing: Unpack[RoutingArgs],
    ) -> pr.Response:
        """Predict on the content at ``url`` (PostModelOutputs); returns the response."""
        inp = pr.input_from_url(url, self._input_type(input_type))
        predictor = self.predictor(inference_params, output_config, routing)
        return predictor.predict(predictor.request([inp], method))

    def predict_by_bytes(
        self,
        input_bytes: bytes,
        input_type: str | None = None,
        inference_params: Params = None,
        output_config: Params = None,
        *,
        method: str | None = None,
        **routing: Unpack[RoutingArgs],
    ) -> pr.Response:
        """Predict on ``input_bytes`` (text as UTF-8); returns the response."""
        inp = pr.input_from_bytes(input_bytes, self._input_type(input_type))
        predictor = self.predictor(inference_params, output_config, routing)
        return predictor.predict(predictor.request([inp], method))

    def predict_by_filepath(
        self,
        filepath: str | Path,
        input_type: str | None = None,
        inference_params: Params = None,
        output_config: Params = None,
        *,
        method: str | None = None,
        **routing: Unpack[RoutingArgs],
    ) -> pr.Response:
        """Predict on the file's bytes; returns the response."""
        payload = _read_file(filepath)
        return self.predict_by_bytes(
            payload, input_type, inference_params, output_config, method=method, **routing
        )

    # -- generate: one request, a stream of responses ------------------------------------------

    def generate_by_url(
        self,
        url: str,
        input_type: str | None = None,
        inference_params: Params = None,
        output_config: Params = None,
        *,
        method: str | None = None,
        **routing: Unpack[RoutingArgs],
    ) -> Iterator[pr.Response]:
        """Generate from the content at ``url`` (GenerateModelOutputs); yields responses."""
        inp = pr.input_from_url(url, self._input_type(input_type))
        predictor = self.predictor(inference_params, output_config, routing)
        return predictor.generate(predictor.request([inp], method))

    def generate_by_bytes(
        self,
        input_bytes: bytes,
        input_type: str | None = None,
        inference_params: Params = None,
        output_config: Params = None,
        *,
        method: str | None = None,
        **routing: Unpack[RoutingArgs],
    ) -> Iterator[pr.Response]:
        """Generate from ``input_bytes``; yields responses as they arrive."""
        inp = pr.input_from_bytes(input_bytes, self._input_type(input_type))
        predictor = self.predictor(inference_params, output_config, routing)
        return predictor.generate(predictor.request([inp], method))

    def generate_by_filepath(
        self,
        filepath: str | Path,
        input_type: str | None = None,
        inference_params: Params = None,
        output_config: Params = None,
        *,
        method: str | None = None,
        **routing: Unpack[RoutingArgs],
    ) -> Iterator[pr.Response]:
        """Generate from the file's bytes; yields responses as they arrive."""
        payload = _read_file(filepath)
        return self.generate_by_bytes(
            payload, input_type, inference_params, output_config, method=method, **routing
        )

    # -- stream: a stream of requests, a stream of responses -----------------------------------

    def stream_by_url(
        self,
        url_iterator: Iterable[str],
        input_type: str | None = None,
        inference_params: Params = None,
        output_config: Params = None,
        *,
        method: str | None = None,
        **routing: Unpack[RoutingArgs],
    ) -> Iterator[pr.Response]:
        """Stream one request per URL (StreamModelOutputs); yields responses."""
        kind = self._input_type(input_type)
        urls = _items(url_iterator, "url_iterator", "URLs", "predict_by_url")
        inputs = (pr.input_from_url(url, kind) for url in urls)
        return self._stream_inputs(inputs, inference_params, output_config, method, routing)

    def stream_by_bytes(
        self,
        input_bytes_iterator: Iterable[bytes],
        input_type: str | None = None,
        inference_params: Params = None,
        output_config: Params = None,
        *,
        method: str | None = None,
        **routing: Unpack[RoutingArgs],
    ) -> Iterator[pr.Response]:
        """Stream one request per item of bytes; yields responses."""
        kind = self._input_type(input_type)
        chunks = _items(input_bytes_iterator, "input_bytes_iterator", "bytes", "predict_by_bytes")
        inputs = (pr.input_from_bytes(chunk, kind) for chunk in chunks)
        return self._stream_inputs(inputs, inference_params, output_config, method, routing)

    def stream_by_filepath(
        self,
        filepath: str | Path,
        input_type: str | None = None,
        inference_params: Params = None,
        output_config: Params = None,
        *,
        method: str | None = None,
        **routing: Unpack[RoutingArgs],
    ) -> Iterator[pr.Response]:
        """Stream the file's bytes as one request; yields responses."""
        payload = _read_file(filepath)
        return self.stream_by_bytes(
            iter([payload]), input_type, inference_params, output_config, method=method, **routing
        )

    def _stream_inputs(
        self,
        inputs: Iterator[resources_pb2.Input],
        inference_params: Params,
        output_config: Params,
        method: str | None,
        routing: Mapping[str, Any],
    ) -> Iterator[pr.Response]:
        predictor = self.predictor(inference_params, output_config, routing)
        return predictor.stream(predictor.request([inp], method) for inp in inputs)

    # -- requests ------------------------------------------------------------------------------

    def predictor(
        self,
        inference_params: Params = None,
        output_config: Params = None,
        routing: Mapping[str, Any] | None = None,
    ) -> pr.Predictor:
        """What sends this model's prediction requests, for these params and routing."""
        request = pr.Request(
            user_app_id=self._user_app_id(self.app_id), model_id=self.id, version_id=self.version_id
        )
        selector = self.get_runner_selector(**(routing or {}))
        if selector is not None:
            request.runner_selector.CopyFrom(selector)
        info = pr.output_info(inference_params, output_config)
        if info is not None:
            request.model.model_version.output_info.CopyFrom(info)
        return pr.Predictor(self, request, self.retry)

    def get_runner_selector(
        self, **routing: Unpack[RoutingArgs]
    ) -> resources_pb2.RunnerSelector | None:
        """Where a call with these routing keywords runs (None: wherever the server routes
        the model). A call's ids replace the constructor's; an owner alone (``user_id`` or
        ``deployment_user_id``) changes only the owner of the constructor's route."""
        return self._selectors.selector(self._call_route({k: v for k, v in routing.items() if v}))

    def _call_route(self, given: Mapping[str, Any]) -> Route | None:
        route = route_from(given)
        if route is not None or self._route is None:
            return route
        owner = given.get("deployment_user_id") or given.get("user_id")
        return dataclasses.replace(self._route, owner=owner) if owner else self._route

    def _input_type(self, given: str | None) -> str:
        if given:
            return pr.checked_input_type(given)
        model_type = self.proto.model_type_id
        if not model_type and not self._loaded:
            model_type = self.refresh().proto.model_type_id
        return pr.input_type_of(model_type, self.id)

    def _caller_id(self) -> str:
        """The owner of the PAT: the user id configured for the caller, else asked of the
        server."""
        if self._caller is None:
            configured = self.settings.sources.get("user_id", "argument") != "argument"
            if configured and self.settings.user_id:
                self._caller = self.settings.user_id
            else:
                request = service_pb2.GetUserRequest(
                    user_app_id=resources_pb2.UserAppIDSet(user_id="me")
                )
                self._caller = self._call("GetUser", request).user.id
        return self._caller

    # -- the typed client ----------------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        fields = self.PROTO.DESCRIPTOR.fields_by_name
        if name.startswith("_") or name in fields or "_typed" not in self.__dict__:
            return super().__getattr__(name)
        methods = self._methods_by_name()
        if name in methods:
            return methods[name]
        raise AttributeError(
            f"model {self.id!r} has no method {name!r}; its methods: "
            f"{', '.join(methods) or 'none (not a Python model: use predict_by_url/_bytes)'}"
        )

    def available_methods(self) -> list[str]:
        """The names of the model's own methods."""
        return list(self._methods_by_name())

    def method_signature(self, name: str) -> str:
        """The method as a Python ``def`` line: ``def predict(text: str) -> str:``."""
        return signature_text(self._model_method(name).signature)

    def signatures(self) -> dict[str, resources_pb2.MethodSignature]:
        """The model's method signatures by name."""
        return {name: m.signature for name, m in self._methods_by_name().items()}

    def _model_method(self, name: str) -> ModelMethod:
        methods = self._methods_by_name()
        if name not in methods:
            raise errors.UserError(
                f"model {self.id!r} has no method {name!r}; its methods: "
                f"{', '.join(methods) or 'none'}"
            )
        return methods[name]

    def _methods_by_name(self) -> dict[str, ModelMethod]:
        if self._typed is None:
            predictor = self.predictor()
            self._typed = {s.name: ModelMethod(s, predictor) for s in self._fetch_signatures()}
        return self._typed

    def _fetch_signatures(self) -> list[resources_pb2.MethodSignature]:
        """The version's stored signatures, else the ones the model itself reports."""
        try:
            stored = self._stored_signatures()
        except errors.NotImplementedByOrchard:
            stored = []
        return stored or self._reported_signatures()

    def _stored_signatures(self) -> list[resources_pb2.MethodSignature]:
        if not self.version_id:
            return list(self.refresh().proto.model_version.method_signatures)
        request = service_pb2.GetModelVersionRequest(
            user_app_id=self._user_app_id(self.app_id), model_id=self.id, version_id=self.version_id
        )
        return list(self._call("GetModelVersion", request).model_version.method_signatures)

    def _reported_signatures(self) -> list[resources_pb2.MethodSignature]:
        predictor = self.predictor()
        probe = resources_pb2.Input()
        probe.data.parts.add()
        try:
            response = predictor.predict(predictor.request([probe], GET_SIGNATURES))
        except errors.OrchardError as exc:
            if exc.code == pr.SC.INPUT_UNSUPPORTED_FORMAT:  # a model that predates signatures
                return []
            raise
        text = response.outputs[0].data.text.raw if response.outputs else ""
        return signatures_from_json(text) if text else []


def _model_ref(
    url: str | None,
    model_id: str | None,
    user_id: str | None,
    app_id: str | None,
    model_version: Mapping[str, Any] | str | None,
    kwargs: Mapping[str, Any],
) -> ModelRef:
    """Who owns the model, its app, id and version, from the constructor's arguments."""
    version = _version_id(model_version)
    if url and model_id:
        raise errors.UserError(
            "You can only specify one of url or model_id; pass the URL alone, or model_id= "
            "with app_id="
        )
    if not url:
        if not (model_id or kwargs.get("_proto") is not None or kwargs.get("id")):
            raise errors.UserError(
                "You must specify one of url or model_id, e.g. "
                "Model('https://HOST/USER_ID/APP_ID/models/MODEL_ID') or "
                "Model(model_id=..., app_id=...)"
            )
        return ModelRef(user_id or "", app_id or "", model_id or "", version)
    ref = parse_model_url(url)
    for arg, given, named in (("user_id", user_id, ref.user_id), ("app_id", app_id, ref.app_id)):
        if given and given != named:
            raise errors.UserError(f"{arg}={given!r} contradicts the URL's {named!r}; drop it")
    return dataclasses.replace(ref, version_id=ref.version_id or version)


def _version_id(model_version: Mapping[str, Any] | str | None) -> str:
    if model_version is None or isinstance(model_version, str):
        return model_version or ""
    if isinstance(model_version, Mapping):
        return str(model_version.get("id") or "")
    raise errors.UserError(
        f"model_version must be a version id or {{'id': VERSION_ID}}, got {model_version!r}"
    )


def _read_file(filepath: str | Path) -> bytes:
    path = Path(filepath).expanduser()
    if not path.is_file():
        raise errors.UserError(f"Invalid filepath: no file at {str(path)!r}")
    return path.read_bytes()


def _items(values: Any, arg: str, what: str, single: str) -> Iterator[Any]:
    if isinstance(values, str | bytes | bytearray) or not isinstance(values, Iterable):
        raise errors.UserError(
            f"{arg} must be an iterable of {what}, got {type(values).__name__}; for one input "
            f"use {single}, or pass a list"
        )
    return iter(values)
