"""Fetching the URL inputs of predictions without letting a prediction reach the server's network.

Before a prediction goes to a runner, the server replaces every
``data.{image,text,audio,video}.url`` (also inside ``data.parts[*].data``, recursively) by the
bytes it points at (:func:`resolve_url_inputs`). Each fetch (:func:`fetch`) takes the same
steps on every hop:

1. the URL must be http or https;
2. its host is resolved once, here, through the :class:`Resolver` seam, and every address it
   resolves to must be public (:func:`refusal_reason`) unless the policy allows private addresses
   or lists the host in ``allowed_hosts``; a refused URL is refused before any connection;
3. the request connects to a checked address itself: the URL's host is replaced by that IP and
   the Host header and TLS server name (SNI and certificate check) keep the original name, so a
   DNS answer that changes after the check (DNS rebinding) is never looked at;
4. redirects are followed here, at most ``max_redirects``, each target a new hop from step 1;
5. the body is streamed and the fetch stops as soon as it passes ``max_bytes``; the whole fetch,
   all hops included, is bounded by ``timeout_s``; a Content-Type that contradicts the input's
   kind (an image field answered with text/html) is refused.

The fetches of one request share its budget (:class:`RequestBudget`): the request with its URL
inputs fetched stays within ``max_request_bytes``, so a request of many URLs cannot grow the
server past the size it would refuse on the wire; the fetch that passes it stops at once.

Every failure is an :class:`~orchard.errors.InputFetchError` whose message names the URL, the
reason and the next step, or, past the request's budget, a
:class:`~orchard.errors.RequestTooLarge` naming the limit.
"""

from __future__ import annotations

import abc
import asyncio
import ipaddress
import socket
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from yarl import URL

from orchard.errors import InputFetchError, RequestTooLarge

InputKind = Literal["image", "text", "audio", "video"]
INPUT_KINDS: tuple[InputKind, ...] = ("image", "text", "audio", "video")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MiB = 1024 * 1024
ALLOW_PRIVATE_HINT = "orchard serve --allow-private-urls to allow"
RAISE_LIMIT_HINT = "orchard serve --max-request-bytes"
_SCHEMES = frozenset({"http", "https"})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK_BYTES = 64 * 1024
_URL_SHOWN_CHARS = 200
_NO_CLIENT_TIMEOUT = aiohttp.ClientTimeout()


@dataclass(frozen=True)
class FetchPolicy:
    """What the server agrees to fetch for the URL inputs of a prediction.

    ``allowed_hosts`` are explicit exceptions to the address check, each ``host`` (any port) or
    ``host:port`` (IPv6 in brackets: ``[::1]:8080``), matched case-insensitively against the host
    as the URL writes it; every other limit still applies to them. ``concurrency`` bounds the
    fetches one :func:`resolve_url_inputs` call runs at once. ``max_bytes`` bounds one URL's
    body, ``max_request_bytes`` the request with all its URL inputs fetched.
    """

    max_bytes: int = 64 * MiB
    max_request_bytes: int = 64 * MiB
    timeout_s: float = 20.0
    allow_private: bool = False
    allowed_hosts: Collection[str] = frozenset()
    max_redirects: int = 3
    concurrency: int = 8

    def __post_init__(self) -> None:
        positive = (self.max_bytes, self.max_request_bytes, self.timeout_s, self.concurrency)
        if min(positive) <= 0:
            raise ValueError(
                "max_bytes, max_request_bytes, timeout_s and concurrency must be positive"
            )
        if self.max_redirects < 0:
            raise ValueError("max_redirects must be zero or more")
        hosts = frozenset(host.strip().lower() for host in self.allowed_hosts)
        object.__setattr__(self, "allowed_hosts", hosts)

    def allows_host(self, url: URL) -> bool:
        """Whether ``url``'s host (with or without its port) is one of ``allowed_hosts``."""
        host = _host_subcomponent(url)
        return host in self.allowed_hosts or f"{host}:{url.port}" in self.allowed_hosts


class RequestBudget:
    """The bytes that one request's URL inputs may still add, shared by its fetches, so that
    the request with its inputs fetched stays within ``limit`` (it is ``used`` bytes as sent)."""

    def __init__(self, limit: int, used: int = 0) -> None:
        self.limit = limit
        self.left = limit - used

    def check(self, size: int) -> None:
        """Raise RequestTooLarge when ``size`` more bytes would not fit."""
        if size > self.left:
            raise RequestTooLarge(
                f"the request with its URL inputs fetched is larger than {_size(self.limit)}, "
                "the server's limit for one request; send fewer or smaller inputs, or ask the "
                f"operator to raise the limit ({RAISE_LIMIT_HINT})"
            )

    def take(self, size: int) -> None:
        """Count ``size`` more bytes; raise RequestTooLarge when they do not fit."""
        self.check(size)
        self.left -= size


# -- the DNS seam ------------------------------------------------------------------------------


class Resolver(abc.ABC):
    """The one way this module asks DNS about a host."""

    @abc.abstractmethod
    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Every address ``host`` resolves to, in the order to try them.

        Never called for IP literals. Raises OSError when the host resolves to nothing.
        """


class SystemResolver(Resolver):
    """The operating system's resolver (``getaddrinfo``, so /etc/hosts included)."""

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
        return list(dict.fromkeys(addresses))


SYSTEM_RESOLVER = SystemResolver()


# -- the address check (pure) ------------------------------------------------------------------

_CATEGORIES: tuple[tuple[str, Callable[[IPAddress], bool]], ...] = (
    ("an unspecified address", lambda ip: ip.is_unspecified),
    ("a loopback address", lambda ip: ip.is_loopback),
    ("a link-local address", lambda ip: ip.is_link_local),
    ("a multicast address", lambda ip: ip.is_multicast),
    ("a private address", lambda ip: ip.is_private),
    ("a reserved address", lambda ip: ip.is_reserved),
    ("not a public address", lambda ip: not ip.is_global),
)


def refusal_reason(ip: IPAddress) -> str | None:
    """Why the server does not connect to ``ip`` (``"a private address"``), or None if public.

    An IPv4-mapped IPv6 address is judged as its IPv4 address; the IPv4 address inside a 6to4
    or Teredo address is judged as well as the IPv6 one.
    """
    for candidate in _judged_addresses(ip):
        for label, applies in _CATEGORIES:
            if applies(candidate):
                return label
    return None


def _judged_addresses(ip: IPAddress) -> list[IPAddress]:
    if isinstance(ip, ipaddress.IPv4Address):
        return [ip]
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    embedded = [ip.sixtofour, ip.teredo[1] if ip.teredo else None]
    return [*(address for address in embedded if address is not None), ip]


# -- the Content-Type check (pure) -------------------------------------------------------------

_UNTYPED = frozenset({"", "application/octet-stream", "binary/octet-stream"})
_MAJOR_TYPES: dict[InputKind, frozenset[str]] = {
    "image": frozenset({"image"}),
    "text": frozenset({"text"}),
    "audio": frozenset({"audio", "video"}),  # audio often comes in video containers (mp4, webm)
    "video": frozenset({"video"}),
}
_EXTRA_TYPES: dict[InputKind, frozenset[str]] = {
    "image": frozenset(),
    "text": frozenset({"application/json", "application/xml", "application/x-ndjson"}),
    "audio": frozenset({"application/ogg"}),
    "video": frozenset({"application/ogg"}),
}


def content_type_fits(mime: str, kind: InputKind) -> bool:
    """Whether a response with Content-Type ``mime`` (no parameters) can be an input of ``kind``.

    An untyped body (no type, or octet-stream) fits every kind; otherwise the type must be the
    kind's own (``image/*`` for an image), a container that carries it, or, for text, JSON/XML.
    """
    mime = mime.lower()
    major, _, subtype = mime.partition("/")
    if mime in _UNTYPED or major in _MAJOR_TYPES[kind] or mime in _EXTRA_TYPES[kind]:
        return True
    return kind == "text" and subtype.endswith(("+json", "+xml"))


# -- one fetch ---------------------------------------------------------------------------------


class _Failure(Exception):
    """Why one fetch failed; :func:`fetch` adds the URL and turns it into InputFetchError."""


async def fetch(
    url: str,
    policy: FetchPolicy,
    session: aiohttp.ClientSession,
    *,
    kind: InputKind | None = None,
    resolver: Resolver = SYSTEM_RESOLVER,
    budget: RequestBudget | None = None,
) -> bytes:
    """The body ``url`` points at, fetched within ``policy`` (see the module docstring).

    ``kind`` is the input kind the URL is for; a response whose Content-Type contradicts it is
    refused (None skips that check). ``session`` may be shared: each request names the checked
    IP address itself, so the session's own resolver is never used; :func:`open_fetch_session`
    makes a suitable one. The body's bytes are taken from ``budget`` as they arrive (None: a
    budget of ``max_request_bytes`` for this body alone). Raises InputFetchError naming the
    URL, the reason and the next step, or RequestTooLarge when the budget runs out.
    """
    budget = budget or RequestBudget(policy.max_request_bytes)
    try:
        async with asyncio.timeout(policy.timeout_s):
            return await _follow(_parse(url), policy, session, kind, resolver, budget)
    except _Failure as exc:
        raise InputFetchError(_message(url, kind, str(exc))) from exc
    except TimeoutError as exc:
        reason = f"timed out after {policy.timeout_s:g} s; check that it answers quickly"
        raise InputFetchError(_message(url, kind, reason)) from exc
    except (aiohttp.ClientError, OSError) as exc:  # anything the steps did not expect
        reason = f"the request failed ({exc}); check the URL"
        raise InputFetchError(_message(url, kind, reason)) from exc


def open_fetch_session() -> aiohttp.ClientSession:
    """A session for :func:`fetch`: no cookies kept between fetches, no proxy from the environment.

    Call it inside the event loop that will use it, and close it when the server stops.
    """
    return aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), trust_env=False)


def _parse(url: str) -> URL:
    try:
        return URL(url)
    except (ValueError, TypeError) as exc:
        raise _Failure("not a valid URL; send an http or https URL") from exc


def _check_scheme_and_host(url: URL) -> None:
    if url.scheme not in _SCHEMES:
        scheme = url.scheme or "none"
        raise _Failure(f"refused: scheme '{scheme}' is not supported; send an http or https URL")
    if not url.raw_host:
        raise _Failure("the URL has no host; send an absolute http or https URL")


async def _follow(
    url: URL,
    policy: FetchPolicy,
    session: aiohttp.ClientSession,
    kind: InputKind | None,
    resolver: Resolver,
    budget: RequestBudget,
) -> bytes:
    """The body at the end of at most ``policy.max_redirects`` redirects from ``url``."""
    for hop in range(policy.max_redirects + 1):
        try:
            result = await _hop(url, policy, session, kind, resolver, budget)
        except _Failure as exc:
            if hop == 0:
                raise
            raise _Failure(f"after a redirect to '{_shown(str(url))}': {exc}") from exc
        if isinstance(result, bytes):
            return result
        url = result
    raise _Failure(f"more than {policy.max_redirects} redirects; send the URL of the file itself")


async def _hop(
    url: URL,
    policy: FetchPolicy,
    session: aiohttp.ClientSession,
    kind: InputKind | None,
    resolver: Resolver,
    budget: RequestBudget,
) -> bytes | URL:
    """One request to a checked address: the body, or the URL a redirect points at."""
    _check_scheme_and_host(url)
    addresses = await _checked_addresses(url, policy, resolver)
    response = await _request(url, addresses, session)
    async with response:
        target = _redirect_target(url, response)
        if target is not None:
            return target
        _check_response(response, kind, policy)
        if response.content_length is not None:
            budget.check(response.content_length)
        return await _read_capped(response, policy.max_bytes, budget)


async def _checked_addresses(url: URL, policy: FetchPolicy, resolver: Resolver) -> list[IPAddress]:
    """The addresses ``url``'s host may be reached at; raises _Failure for a refused one."""
    host = _bare_host(url)
    literal = _ip_literal(host)
    addresses = [literal] if literal is not None else await _resolve(host, url, resolver)
    if policy.allow_private or policy.allows_host(url):
        return addresses
    for ip in addresses:
        reason = refusal_reason(ip)
        if reason is not None:
            subject = _describe(ip) if literal else f"{host} resolves to {_describe(ip)}, which"
            raise _Failure(
                f"refused: {subject} is {reason}; the server does not fetch from its own "
                f"network ({ALLOW_PRIVATE_HINT})"
            )
    return addresses


async def _resolve(host: str, url: URL, resolver: Resolver) -> list[IPAddress]:
    try:
        addresses = await resolver.resolve(host, _port(url))
    except OSError as exc:
        raise _Failure(f"cannot resolve host '{host}' ({exc}); check the host name") from exc
    if not addresses:
        raise _Failure(f"host '{host}' resolves to no address; check the host name")
    return addresses


def _describe(ip: IPAddress) -> str:
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return f"{ip} (IPv4-mapped {mapped})" if mapped else str(ip)


async def _request(
    url: URL, addresses: list[IPAddress], session: aiohttp.ClientSession
) -> aiohttp.ClientResponse:
    """The response of the first address that accepts a connection, tried in order."""
    host = _bare_host(url)
    failure: aiohttp.ClientConnectorError | None = None
    for ip in addresses:
        try:
            return await session.get(
                _url_at(url, ip),
                # The original name goes to HTTP (Host) and to TLS (SNI, certificate check).
                headers={"Host": url.host_port_subcomponent or host},
                server_hostname=None if _ip_literal(host) else host.rstrip("."),
                allow_redirects=False,
                raise_for_status=False,
                timeout=_NO_CLIENT_TIMEOUT,  # fetch() bounds the whole fetch, all hops
            )
        except aiohttp.ClientConnectorError as exc:
            failure = exc
    raise _Failure(f"cannot connect to {host} ({failure}); check the URL")


def _url_at(url: URL, ip: IPAddress) -> URL:
    """``url`` with its host replaced by ``ip``, so the connection goes exactly there."""
    return url.with_host(str(ip)) if _ip_literal(_bare_host(url)) is None else url


def _redirect_target(url: URL, response: aiohttp.ClientResponse) -> URL | None:
    location = response.headers.get("Location")
    if response.status not in _REDIRECTS or not location:
        return None
    try:
        return url.join(URL(location))
    except ValueError as exc:
        raise _Failure(f"redirect to an invalid URL '{_shown(location)}'") from exc


def _check_response(
    response: aiohttp.ClientResponse, kind: InputKind | None, policy: FetchPolicy
) -> None:
    if response.status >= 300:
        reason = f"HTTP {response.status} {response.reason or ''}".rstrip()
        raise _Failure(f"{reason}; check that the URL is right and publicly readable")
    length = response.content_length
    if length is not None and length > policy.max_bytes:
        raise _Failure(_too_large(policy.max_bytes))
    if kind is not None and not content_type_fits(response.content_type, kind):
        raise _Failure(
            f"the response is {response.content_type}, not {_KIND_NOUNS[kind]}; "
            "send the URL of the file itself"
        )


async def _read_capped(
    response: aiohttp.ClientResponse, max_bytes: int, budget: RequestBudget
) -> bytes:
    """The body, streamed; stops reading (and drops the connection) once it passes max_bytes
    or the request's budget."""
    body = bytearray()
    try:
        async for chunk in response.content.iter_chunked(_CHUNK_BYTES):
            body += chunk
            if len(body) > max_bytes:
                raise _Failure(_too_large(max_bytes))
            budget.take(len(chunk))
    except aiohttp.ClientError as exc:
        raise _Failure(f"the download broke off ({exc}); try again") from exc
    return bytes(body)


# -- small helpers for URLs and messages -------------------------------------------------------


def _bare_host(url: URL) -> str:
    """The URL's host as DNS and TLS see it: IDNA-encoded, lowercased, no IPv6 brackets."""
    return (url.raw_host or "").lower()


def _host_subcomponent(url: URL) -> str:
    """The URL's host as an authority writes it (IPv6 in brackets), lowercased."""
    return (url.host_subcomponent or "").lower()


def _port(url: URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _too_large(max_bytes: int) -> str:
    return (
        f"the response is larger than {_size(max_bytes)}, the server's limit; send a smaller file"
    )


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1024 * MiB), ("MiB", MiB), ("KiB", 1024)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} bytes"


_KIND_NOUNS: dict[InputKind, str] = {
    "image": "an image",
    "text": "text",
    "audio": "an audio file",
    "video": "a video",
}


def _shown(url: str) -> str:
    return url if len(url) <= _URL_SHOWN_CHARS else url[:_URL_SHOWN_CHARS] + "..."


def _message(url: str, kind: InputKind | None, reason: str) -> str:
    what = f"{kind} URL" if kind else "URL"
    return f"Cannot fetch input {what} '{_shown(url)}': {reason}"


# -- all URL inputs of a prediction ------------------------------------------------------------

_Key = tuple[InputKind, str]


async def resolve_url_inputs(
    request: service_pb2.PostModelOutputsRequest,
    policy: FetchPolicy,
    session: aiohttp.ClientSession,
    *,
    resolver: Resolver = SYSTEM_RESOLVER,
) -> service_pb2.PostModelOutputsRequest:
    """``request`` with its URL inputs replaced by the bytes they point at (a copy when there
    are any; ``request`` itself when there are none).

    Every ``data.{image,audio,video}.url`` of every input, and of its ``data.parts[*].data``
    recursively, becomes ``.base64``; every ``data.text.url`` becomes ``.text.raw`` (UTF-8);
    the URL is cleared. Fetches run in parallel, at most ``policy.concurrency`` at once, and
    the same URL for the same kind is fetched once. The number of inputs is the caller's to
    bound. ``request`` is never modified. Raises InputFetchError for the first fetch that
    fails, or RequestTooLarge once the request with what was fetched passes
    ``policy.max_request_bytes``; the other fetches are then cancelled.
    """
    if not any(True for _ in _url_targets(request)):
        return request  # nothing to fetch: no copy (the common case, on the hot path)
    resolved = service_pb2.PostModelOutputsRequest()
    resolved.CopyFrom(request)
    targets = list(_url_targets(resolved))
    keys = {(kind, media.url) for kind, media in targets}
    budget = RequestBudget(policy.max_request_bytes, request.ByteSize())
    bodies = await _fetch_all(keys, policy, session, resolver, budget)
    for kind, media in targets:
        _fill(media, kind, bodies[(kind, media.url)])
    # A body that several inputs use was fetched (and counted) once: the whole request decides.
    RequestBudget(policy.max_request_bytes).check(resolved.ByteSize())
    return resolved


def _url_targets(request: service_pb2.PostModelOutputsRequest) -> Iterator[tuple[InputKind, Any]]:
    for input_ in request.inputs:
        yield from _data_targets(input_.data)


def _data_targets(data: resources_pb2.Data) -> Iterator[tuple[InputKind, Any]]:
    """(kind, media message) for every media with a URL in ``data`` and its parts."""
    for kind in INPUT_KINDS:
        if data.HasField(kind) and getattr(data, kind).url:
            yield kind, getattr(data, kind)
    for part in data.parts:
        yield from _data_targets(part.data)


async def _fetch_all(
    keys: Iterable[_Key],
    policy: FetchPolicy,
    session: aiohttp.ClientSession,
    resolver: Resolver,
    budget: RequestBudget,
) -> dict[_Key, bytes]:
    limit = asyncio.Semaphore(policy.concurrency)

    async def fetch_one(kind: InputKind, url: str) -> bytes:
        async with limit:
            return await fetch(url, policy, session, kind=kind, resolver=resolver, budget=budget)

    tasks = {key: asyncio.create_task(fetch_one(*key)) for key in keys}
    try:
        await _raise_first_failure(tasks.values())
    finally:
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
    return {key: task.result() for key, task in tasks.items()}


async def _raise_first_failure(tasks: Collection[asyncio.Task[bytes]]) -> None:
    """Wait until every task is done or one has failed, and raise that failure."""
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    for task in done:
        failure = task.exception()
        if failure is not None:
            raise failure


def _fill(media: Any, kind: InputKind, body: bytes) -> None:
    """Put ``body`` in place of ``media``'s URL (text as ``raw``, the others as ``base64``)."""
    if kind == "text":
        media.raw = _utf8(media.url, body)
    else:
        media.base64 = body
    media.ClearField("url")


def _utf8(url: str, body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        reason = f"the response is not UTF-8 text ({exc.reason} at byte {exc.start})"
        raise InputFetchError(_message(url, "text", f"{reason}; send UTF-8 text")) from exc
