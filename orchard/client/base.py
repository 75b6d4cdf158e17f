"""Settings resolution and the one RPC helper every SDK client goes through.

Each setting is resolved on its own, first match wins:

=========  ==========  ====================================  ======================  ==============
setting    argument    environment                           config file context     default
=========  ==========  ====================================  ======================  ==============
base_url   base_url=   ORCHARD_API_BASE, CLARIFAI_API_BASE   ``base_url``            127.0.0.1:7600
pat        pat=        ORCHARD_PAT, CLARIFAI_PAT             ``pat``                 (UserError)
user_id    user_id=    ORCHARD_USER_ID, CLARIFAI_USER_ID     ``user_id``             GetUser('me')
=========  ==========  ====================================  ======================  ==============

The config file context is the one named by ``context=`` or else the file's current context
(see :mod:`orchard.client.contexts`). A user id found nowhere is asked of the server, lazily, on
first use, as the owner of the PAT.

Every call goes through :meth:`BaseClient._call`: a transport failure becomes an error-family
member (``channels.translate_rpc_error``) and a non-success response status becomes one through
``errors.raise_for_status``, so every failure the SDK raises is an :class:`OrchardError`.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import grpc
from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from google.protobuf.message import Message

from orchard import errors, wire
from orchard.client import channels, contexts

DEFAULT_BASE_URL = "http://127.0.0.1:7600"
DEFAULT_TIMEOUT_S = 120.0
ENV_NAMES: dict[str, tuple[str, ...]] = {
    "base_url": ("ORCHARD_API_BASE", "CLARIFAI_API_BASE"),
    "pat": ("ORCHARD_PAT", "CLARIFAI_PAT"),
    "user_id": ("ORCHARD_USER_ID", "CLARIFAI_USER_ID"),
}
# Keyword arguments every client takes besides its ids (``app_id`` is accepted and ignored:
# compute-orchestration resources are user-scoped).
CLIENT_KWARGS = frozenset(
    {"context", "config_path", "timeout", "root_certificates_path", "token", "app_id", "_client"}
)


@dataclass(frozen=True)
class Settings:
    """Resolved connection settings; ``sources`` says where each one came from."""

    base_url: str
    pat: str
    user_id: str | None
    sources: dict[str, str] = field(default_factory=dict, compare=False)


def resolve_settings(
    base_url: str | None = None,
    pat: str | None = None,
    user_id: str | None = None,
    *,
    context: str | None = None,
    config_path: str | os.PathLike[str] | None = None,
) -> Settings:
    """Resolve base URL, PAT and user id: argument, then env, then config context, then default."""
    values: dict[str, str] = {}
    sources: dict[str, str] = {}
    for key, given in (("base_url", base_url), ("pat", pat), ("user_id", user_id)):
        found = _from_argument_or_env(key, given)
        if found:
            values[key], sources[key] = found
    if context is not None or len(values) < len(ENV_NAMES):
        ctx = contexts.load_context(context, config_path)
        where = f"context {context or 'current'} of {contexts.config_path(config_path)}"
        for key, value in (ctx.to_dict() if ctx else {}).items():
            if key not in values:
                values[key], sources[key] = value, where
    if "base_url" not in values:
        values["base_url"], sources["base_url"] = DEFAULT_BASE_URL, "default"
    if "pat" not in values:
        raise _no_pat(context, contexts.config_path(config_path))
    return Settings(values["base_url"], values["pat"], values.get("user_id"), sources)


def _no_pat(context: str | None, path: Path) -> errors.UserError:
    where = f"context {context!r}" if context else "the current context"
    missing = "" if path.exists() else ", which does not exist"
    return errors.UserError(
        "no personal access token (PAT) found; log in with `orchard login BASE_URL --pat PAT` "
        "or set ORCHARD_PAT (looked in: argument pat=, env ORCHARD_PAT and CLARIFAI_PAT, "
        f"{where} of the config file {path}{missing})"
    )


def _from_argument_or_env(key: str, given: str | None) -> tuple[str, str] | None:
    if given:
        return given, "argument"
    for name in ENV_NAMES[key]:
        value = os.environ.get(name)
        if value:
            return value, f"env {name}"
    return None


class BaseClient:
    """Connection settings, a shared channel, and :meth:`_call`.

    Clients built by another client (``user.compute_cluster(...)``) reuse its settings and its
    resolved user id. Channels are shared per target across all clients and closed when the last
    client using one is closed (:meth:`close`, ``with`` or garbage collection).
    """

    def __init__(
        self,
        user_id: str | None = None,
        base_url: str | None = None,
        pat: str | None = None,
        *,
        context: str | None = None,
        config_path: str | os.PathLike[str] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        root_certificates_path: str | None = None,
        token: str | None = None,  # session tokens: accepted for seed compatibility, unused
        app_id: str | None = None,  # accepted for seed compatibility, unused
        _client: BaseClient | None = None,
    ) -> None:
        self.timeout: float | None
        self._user_id: str | None
        if _client is not None:
            self.settings: Settings = _client.settings
            self._target: channels.Target = _client._target
            self.timeout = _client.timeout
            self._user_id = user_id or _client._user_id
        else:
            self.settings = resolve_settings(
                base_url, pat, user_id, context=context, config_path=config_path
            )
            self._target = channels.parse_base_url(
                self.settings.base_url, root_certificates_path or ""
            )
            self.timeout = timeout
            self._user_id = self.settings.user_id
        self._metadata = (("authorization", f"Key {self.settings.pat}"),)
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self._methods: dict[str, Any] = {}
        self._release: weakref.finalize | None = None

    @property
    def base_url(self) -> str:
        return self.settings.base_url

    @property
    def pat(self) -> str:
        return self.settings.pat

    @property
    def user_id(self) -> str:
        """The user this client acts for; asked of the server (owner of the PAT) if not given."""
        if self._user_id is None:
            request = service_pb2.GetUserRequest(
                user_app_id=resources_pb2.UserAppIDSet(user_id="me")
            )
            self._user_id = self._call("GetUser", request).user.id
        return self._user_id

    def _user_app_id(self, app_id: str = "") -> resources_pb2.UserAppIDSet:
        return resources_pb2.UserAppIDSet(user_id=self.user_id, app_id=app_id)

    def _call(self, rpc_name: str, request: Message) -> Any:
        """Invoke one unary RPC; raise the error-family member for any failure."""
        response = self._unary(rpc_name, request)
        errors.raise_for_status(response.status)
        return response

    def _unary(self, rpc_name: str, request: Message) -> Any:
        """Invoke one unary RPC; the response comes back whatever its status (the caller's to
        read), a transport failure as an error-family member."""
        method = self._method(rpc_name)
        try:
            return method(request, metadata=self._metadata, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise channels.translate_rpc_error(exc, rpc_name, self._target, self.timeout) from exc

    def _stream(
        self,
        rpc_name: str,
        requests: Message | Iterator[Message],
        timeout: float | None = None,
    ) -> Iterator[Any]:
        """Invoke a server-streaming RPC (one request) or a bidi one (an iterator of requests),
        with no deadline unless given. Responses come back as they are (their statuses are the
        caller's to read), transport failures as error-family members. Closing the iterator
        early cancels the call."""
        method = self._method(rpc_name)
        call = method(requests, metadata=self._metadata, timeout=timeout)
        try:
            yield from call
        except grpc.RpcError as exc:
            raise channels.translate_rpc_error(exc, rpc_name, self._target, timeout) from exc
        finally:
            call.cancel()  # a no-op once the call has ended

    def _method(self, rpc_name: str) -> Any:
        with self._lock:
            if self._channel is None:
                self._channel = channels.POOL.acquire(self._target)
                self._release = weakref.finalize(self, channels.POOL.release, self._target)
                self._release.atexit = False
            if rpc_name not in self._methods:
                self._methods[rpc_name] = wire.callable_for(self._channel, rpc_name)
            return self._methods[rpc_name]

    def close(self) -> None:
        """Give up this client's hold on its channel (the channel closes with its last user)."""
        with self._lock:
            if self._release is not None:
                self._release()
            self._release, self._channel = None, None
            self._methods.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
