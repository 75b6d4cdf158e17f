"""gRPC channels to an Orchard server: base-URL parsing, one shared channel per target, and the
translation of transport failures (``grpc.RpcError``) into the error family.

Base URLs: ``http://host:port`` and ``host:port`` give an insecure channel; ``https://host[:port]``
gives TLS (port 443 by default). ``http://host`` means port 80.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import grpc

from orchard import errors

MAX_MESSAGE_BYTES = 1 << 30  # model inputs and outputs can be large (api-notes section 7)
_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]


@dataclass(frozen=True)
class Target:
    """Where a channel goes: ``host:port`` and whether it uses TLS."""

    host: str
    port: int
    secure: bool
    root_certificates_path: str = ""

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_base_url(base_url: str, root_certificates_path: str = "") -> Target:
    """The channel target a base URL names, or a UserError explaining the accepted forms."""
    text = base_url.strip().rstrip("/")
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme not in ("", "http", "https", "grpc", "grpcs"):
        raise _bad_url(base_url, f"unknown scheme {scheme!r}")
    try:
        parts = urlsplit(text if scheme else f"grpc://{text}")
        port = parts.port
    except ValueError as exc:
        raise _bad_url(base_url, str(exc)) from None
    if not parts.hostname:
        raise _bad_url(base_url, "no host")
    secure = scheme in ("https", "grpcs")
    if port is None:
        if not scheme:
            raise _bad_url(base_url, "no port")
        port = 443 if secure else 80
    return Target(parts.hostname, port, secure, root_certificates_path)


def _bad_url(base_url: str, why: str) -> errors.UserError:
    return errors.UserError(
        f"invalid base URL {base_url!r} ({why}); write http://HOST:PORT or HOST:PORT for a plain "
        "connection, or https://HOST[:PORT] for TLS"
    )


def _open_channel(target: Target) -> grpc.Channel:
    if not target.secure:
        return grpc.insecure_channel(target.address, options=_CHANNEL_OPTIONS)
    roots = None
    if target.root_certificates_path:
        try:
            roots = Path(target.root_certificates_path).read_bytes()
        except OSError as exc:
            raise errors.UserError(
                f"cannot read root certificates {target.root_certificates_path!r}: {exc}"
            ) from None
    creds = grpc.ssl_channel_credentials(root_certificates=roots)
    return grpc.secure_channel(target.address, creds, options=_CHANNEL_OPTIONS)


class ChannelPool:
    """One channel per target, shared by every client that talks to it, closed with the last."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._channels: dict[Target, tuple[grpc.Channel, int]] = {}

    def acquire(self, target: Target) -> grpc.Channel:
        with self._lock:
            channel, users = self._channels.get(target) or (_open_channel(target), 0)
            self._channels[target] = (channel, users + 1)
            return channel

    def release(self, target: Target) -> None:
        with self._lock:
            entry = self._channels.get(target)
            if entry is None:
                return
            channel, users = entry
            if users > 1:
                self._channels[target] = (channel, users - 1)
                return
            del self._channels[target]
        channel.close()

    def users(self, target: Target) -> int:
        with self._lock:
            return self._channels.get(target, (None, 0))[1]


POOL = ChannelPool()


# grpc's answer when the server refuses a message over its limit
_OVER_LIMIT = re.compile(r"SERVER: Received message larger than max \((\d+) vs\. (\d+)\)")


def translate_rpc_error(
    exc: grpc.RpcError, rpc_name: str, target: Target, timeout: float | None
) -> errors.OrchardError:
    """The error-family member a transport failure stands for (the SDK's only such mapping)."""
    code = exc.code() if hasattr(exc, "code") else None
    detail = exc.details() if hasattr(exc, "details") else ""
    where = target.address
    if code == grpc.StatusCode.UNAVAILABLE:
        return errors.Unavailable(
            f"cannot reach Orchard at {where}; start it with `orchard serve` or check the base URL"
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return errors.Unavailable(
            f"Orchard at {where} did not answer {rpc_name} within {timeout}s; check that the "
            "server is healthy, or pass a larger timeout="
        )
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return errors.AuthenticationError(
            f"Orchard at {where} refused the credentials for {rpc_name}: {detail}; "
            "log in again with `orchard login`"
        )
    too_large = _OVER_LIMIT.search(detail or "")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and too_large:
        size, limit = too_large.groups()
        return errors.RequestTooLarge(
            f"Orchard at {where} refused {rpc_name}: the request is {size} bytes, over the "
            f"server's limit of {limit} bytes; send smaller inputs, or ask the operator to "
            "raise the limit (orchard serve --max-request-bytes)"
        )
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return errors.NotImplementedByOrchard(
            f"the server at {where} does not implement {rpc_name}; check that the base URL "
            "points at an Orchard server of a matching version"
        )
    name = code.name if code is not None else "UNKNOWN"
    return errors.OrchardError(f"{rpc_name} to {where} failed with gRPC {name}: {detail}")
