"""The base of the resource clients (ComputeCluster, Nodepool, Deployment, App), and the
config-input handling their ``create_*`` methods share.

A resource client keeps its protobuf in ``.proto`` and attribute access falls through to it
(``cc.region``, ``np.min_instances``). A client built from a server answer (create, get, list)
holds that answer. A client built by hand (``ComputeCluster(compute_cluster_id=..., user_id=...)``)
holds only what it was given, and loads itself with one Get call the first time an attribute
falls through to the protobuf; :meth:`Resource.refresh` loads it again at any time.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

from google.protobuf import json_format
from google.protobuf.message import Message

from orchard import configs, errors
from orchard.client.base import CLIENT_KWARGS, BaseClient


class Resource(BaseClient):
    PROTO: ClassVar[type[Message]]
    NOUN: ClassVar[str]  # "compute cluster"
    ID_ARG: ClassVar[str]  # "compute_cluster_id"
    REPR_FIELDS: ClassVar[tuple[str, ...]] = ()  # dotted proto paths shown by repr()

    def __init__(self, resource_id: str | None, **kwargs: Any) -> None:
        proto: Message | None = kwargs.pop("_proto", None)
        client_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in CLIENT_KWARGS}
        user_id = kwargs.pop("user_id", None)
        resource_id = resource_id or kwargs.pop("id", None) or getattr(proto, "id", None)
        if not resource_id:
            raise errors.UserError(f"{type(self).__name__} needs {self.ID_ARG}")
        super().__init__(
            user_id=user_id,
            base_url=kwargs.pop("base_url", None),
            pat=kwargs.pop("pat", None),
            **client_kwargs,
        )
        self.id: str = resource_id
        self._loaded = proto is not None
        self.proto: Any = proto if proto is not None else self._local_proto(resource_id, kwargs)

    def _local_proto(self, resource_id: str, fields: dict[str, Any]) -> Message:
        proto_class: Any = self.PROTO  # a generated message class: fields by keyword
        try:
            return proto_class(id=resource_id, **fields)
        except (TypeError, ValueError) as exc:
            raise errors.UserError(
                f"{type(self).__name__}: {exc}; pass only fields of {self.PROTO.DESCRIPTOR.name}"
            ) from None

    @classmethod
    def _from_proto(cls, proto: Message, client: BaseClient, **kwargs: Any) -> Self:
        """A client for a resource the server just described, sharing ``client``'s connection."""
        return cls(None, _proto=proto, _client=client, **kwargs)

    def _get(self) -> Message:
        """The resource as the server holds it now (one Get call)."""
        raise NotImplementedError

    def refresh(self) -> Self:
        """Load the resource from the server again; returns self."""
        self.proto = self._get()
        self._loaded = True
        return self

    def __getattr__(self, name: str) -> Any:
        proto = self.__dict__.get("proto")
        if name.startswith("_") or proto is None or name not in proto.DESCRIPTOR.fields_by_name:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        if not self.__dict__.get("_loaded", True):
            self.refresh()
        return getattr(self.__dict__["proto"], name)

    def to_dict(self) -> dict[str, Any]:
        """The protobuf as a dict with the API's field names (as in a config file)."""
        return json_format.MessageToDict(self.proto, preserving_proto_field_name=True)

    def __repr__(self) -> str:
        shown = [f"id={self.id!r}"]
        if self._user_id:
            shown.append(f"user_id={self._user_id!r}")
        for path in self.REPR_FIELDS:
            value = _dig(self.proto, path)
            if value not in ("", 0, None) and not (isinstance(value, list) and not value):
                shown.append(f"{path.split('.')[0]}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"


def _dig(message: Any, path: str) -> Any:
    value = message
    for part in path.split("."):
        value = getattr(value, part)
    if isinstance(value, Message):
        return None
    return value if isinstance(value, str | int | float | bool) else list(value)


# -- config input shared by the create_* methods -------------------------------------------


def read_config_input(
    config_filepath: str | Path | None,
    config: Mapping[str, Any] | None,
    top_key: str,
    error: type[errors.OrchardError],
) -> dict[str, Any]:
    """The resource mapping from exactly one of a YAML file or a dict.

    The dict may be the whole config (``{top_key: {...}}``) or just the mapping under it.
    """
    if (config_filepath is None) == (config is None):
        raise errors.UserError(
            f"give exactly one of config_filepath or {top_key}_config "
            f"(got {'both' if config is not None else 'neither'})"
        )
    if config_filepath is not None:
        data = configs.load_config_file(config_filepath, top_key, error)
    elif isinstance(config, Mapping) and set(config) == {top_key}:
        data = config[top_key]
    else:
        data = config
    if not isinstance(data, Mapping):
        raise error(f"{top_key}: expected a mapping of fields, got {type(data).__name__}")
    return copy.deepcopy(dict(data))


def build_proto(
    spec: type[configs.Spec],
    data: dict[str, Any],
    message: Message,
    *,
    where: str,
    error: type[errors.OrchardError],
) -> Any:
    """Validate ``data`` against ``spec`` (field-path errors) and fill ``message`` from it."""
    value = configs.validate(spec, data, where=where, error=error)
    try:
        return configs.spec_to_proto(value, message)
    except json_format.ParseError as exc:
        raise error(f"invalid config: {where}: {exc}") from None


def require_id(given: str | None, data: dict[str, Any], noun: str, arg: str, top_key: str) -> str:
    """The resource id: the argument wins over the config's ``id``; one of them is required."""
    resource_id = given or data.get("id")
    if not resource_id:
        raise errors.UserError(
            f"{noun} id is missing; pass {arg}= or set {top_key}.id in the config"
        )
    if not isinstance(resource_id, str):
        raise errors.UserError(f"{noun} id must be a string, got {resource_id!r}")
    data["id"] = resource_id
    return resource_id


def check_id_list(ids: Any, arg: str) -> list[str]:
    if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
        raise errors.UserError(f"{arg} must be a list of id strings, got {ids!r}")
    if not ids:
        raise errors.UserError(f"{arg} is empty; give at least one id")
    return ids


def first_or(items: Any, fallback: Any) -> Any:
    """The first of a repeated protobuf field, or ``fallback`` when the server sent none."""
    return items[0] if len(items) else fallback
