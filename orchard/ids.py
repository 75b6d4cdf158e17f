"""Typed ids shared by the layers: the server, the dispatcher, the orchestrator and the services
pass these instead of loose strings. Neutral ground: it imports nothing of Orchard's."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit


class _VersionKeys(Protocol):
    """What names a model version (a ``ModelVersionRow`` has these)."""

    @property
    def user_id(self) -> str: ...

    @property
    def app_id(self) -> str: ...

    @property
    def model_id(self) -> str: ...

    @property
    def id(self) -> str: ...


@dataclass(frozen=True)
class PoolKey:
    """One nodepool: its owner, compute cluster and id."""

    user_id: str
    compute_cluster_id: str
    nodepool_id: str


@dataclass(frozen=True)
class VersionRef:
    """One model version: its owner, app, model and version ids."""

    user_id: str
    app_id: str
    model_id: str
    version_id: str

    @classmethod
    def of(cls, row: _VersionKeys) -> VersionRef:
        return cls(row.user_id, row.app_id, row.model_id, row.id)


ME = "me"  # the V2 API's name for the caller's own user id, in paths and messages alike


def names_caller(requested: str, caller: str) -> bool:
    """Whether a request's user id (empty, ``me`` or an id) names the caller itself."""
    return requested in ("", ME, caller)


_MODEL_PATH = re.compile(
    r"(?:^|/)(?P<user>[^/\s]+)/(?P<app>[^/\s]+)/models/(?P<model>[^/\s]+)"
    r"(?:/versions/(?P<version>[^/\s]+))?/*$"
)


@dataclass(frozen=True)
class ModelRef:
    """What a model URL names: a model of a user's app, and maybe one of its versions."""

    user_id: str
    app_id: str
    model_id: str
    version_id: str = ""


def model_ref(url: str) -> ModelRef | None:
    """``https://HOST/USER/APP/models/MODEL[/versions/VERSION]`` (any host, or none: the
    path alone), as the SDKs and the hosted OpenAI endpoint take it; None when it names none."""
    path = urlsplit(url).path if "://" in url else url.split("?", 1)[0].split("#", 1)[0]
    found = _MODEL_PATH.search(path.strip())
    if found is None:
        return None
    return ModelRef(found["user"], found["app"], found["model"], found["version"] or "")
