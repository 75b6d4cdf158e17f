"""URL inputs are fetched within the policy, and never from the server's own network.

Everything runs against an aiohttp test server on 127.0.0.1 (port 0) that each test starts and
stops. Non-loopback addresses appear only as URLs that must be refused; a spy connector proves
that no connection was attempted for them, and fake resolvers stand in for DNS.
"""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from clarifai_grpc.grpc.api import resources_pb2, service_pb2

from orchard.errors import InputFetchError, RequestTooLarge
from orchard.services import fetch as fetching
from orchard.services.fetch import FetchPolicy, fetch, resolve_url_inputs

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
WAV = b"RIFF....WAVEfmt "
MP4 = b"\x00\x00\x00\x18ftypmp42"
HINT = "orchard serve --allow-private-urls to allow"
DEADLINE_S = 10  # how long a test waits for something that should happen at once


class Origin:
    """The test server: fixed routes, plus what the tests need to observe or release."""

    def __init__(self) -> None:
        self.release = asyncio.Event()  # held handlers wait on it; the test sets it
        self.client_gone = asyncio.Event()
        self.sent = 0
        self.hits: dict[str, int] = {}
        self.active = 0
        self.peak = 0
        self.crowd = asyncio.Event()
        self.crowd_size = 2
        self.server: TestServer | None = None

    @property
    def port(self) -> int:
        assert self.server is not None and self.server.port is not None
        return self.server.port

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/redirect", self.redirect)
        app.router.add_get("/loop", self.loop)
        app.router.add_get("/endless", self.endless)
        app.router.add_get("/declared-huge", self.declared_huge)
        app.router.add_get("/held", self.held)
        app.router.add_get("/crowded/{name}", self.crowded)
        app.router.add_get("/host", self.host)
        app.router.add_get("/{name}", self.static)
        return app

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.hits[name] = self.hits.get(name, 0) + 1
        files = {
            "image.png": (PNG, "image/png"),
            "blob": (PNG, "application/octet-stream"),
            "hello.txt": ("héllo wörld".encode(), "text/plain; charset=utf-8"),
            "latin1.txt": ("héllo".encode("latin-1"), "text/plain"),
            "sound.wav": (WAV, "audio/wav"),
            "clip.mp4": (MP4, "video/mp4"),
            "page.html": (b"<html>sign in</html>", "text/html"),
        }
        if name not in files:
            raise web.HTTPNotFound()
        body, content_type = files[name]
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def loop(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def host(self, request: web.Request) -> web.Response:
        return web.Response(text=request.headers["Host"])

    async def endless(self, request: web.Request) -> web.StreamResponse:
        """Streams without a length until the client hangs up (or 256 MiB, so it ends)."""
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        await response.prepare(request)
        try:
            while self.sent < 256 * fetching.MiB:
                await response.write(b"x" * 65536)
                self.sent += 65536
        finally:  # the server cancels the handler (or the write fails) once the client is gone
            self.client_gone.set()
        return response

    async def declared_huge(self, request: web.Request) -> web.StreamResponse:
        """Declares 1 GiB, sends nothing until released: only the header can stop a client."""
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        response.content_length = 1024 * fetching.MiB
        await response.prepare(request)
        await self.release.wait()
        return response

    async def held(self, request: web.Request) -> web.Response:
        await self.release.wait()
        return web.Response(body=PNG, headers={"Content-Type": "image/png"})

    async def crowded(self, request: web.Request) -> web.Response:
        """Counts requests in flight; each waits until crowd_size of them have arrived."""
        self.active += 1
        self.peak = max(self.peak, self.active)
        if self.active >= self.crowd_size:
            self.crowd.set()
        try:
            await asyncio.wait_for(self.crowd.wait(), DEADLINE_S)
        finally:
            self.active -= 1
        return web.Response(body=PNG, headers={"Content-Type": "image/png"})


class SpyConnector(aiohttp.TCPConnector):
    """Records the host of every connection the session asks for."""

    def __init__(self) -> None:
        super().__init__()
        self.hosts: list[str] = []

    async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:
        self.hosts.append(req.url.host)
        return await super().connect(req, traces, timeout)


class FakeResolver(fetching.Resolver):
    """A DNS stand-in; names it does not know resolve through the system (``localhost``)."""

    def __init__(self, table: dict[str, list[str]] | None = None) -> None:
        self.table = table or {}
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int) -> list[fetching.IPAddress]:
        self.asked.append(host)
        if host in self.table:
            return [ipaddress.ip_address(a) for a in self.table[host]]
        return await fetching.SYSTEM_RESOLVER.resolve(host, port)


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    origin = Origin()
    origin.server = TestServer(origin.app(), host="127.0.0.1", port=0)
    await origin.server.start_server()
    yield origin
    origin.release.set()
    await origin.server.close()


@pytest.fixture
async def connector() -> AsyncIterator[SpyConnector]:
    spy = SpyConnector()
    yield spy
    await spy.close()


@pytest.fixture
async def session(connector: SpyConnector) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=connector, connector_owner=False) as session:
        yield session


@pytest.fixture
def resolver() -> FakeResolver:
    return FakeResolver()


def trusting(origin: Origin, **overrides: Any) -> FetchPolicy:
    """The default policy plus an exception for the test server."""
    return FetchPolicy(allowed_hosts={f"127.0.0.1:{origin.port}"}, **overrides)


# -- refused before any connection -------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1/", "127.0.0.1 is a loopback address"),
        ("http://10.0.0.5/x.png", "10.0.0.5 is a private address"),
        ("http://192.168.1.1/", "192.168.1.1 is a private address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
        ("http://0.0.0.0:8080/", "0.0.0.0 is an unspecified address"),
        ("http://224.0.0.1/", "224.0.0.1 is a multicast address"),
        ("http://100.64.0.1/", "100.64.0.1 is not a public address"),
        ("http://[::1]:8080/", "::1 is a loopback address"),
        ("http://[fc00::1]/", "fc00::1 is a private address"),
        ("http://[fe80::1]/", "fe80::1 is a link-local address"),
        ("http://[::ffff:10.0.0.5]/", "(IPv4-mapped 10.0.0.5) is a private address"),
        ("http://[::ffff:127.0.0.1]/", "(IPv4-mapped 127.0.0.1) is a loopback address"),
    ],
)
async def test_private_literal_addresses_are_refused_before_connecting(
    url, says, session, connector, resolver
):
    with pytest.raises(InputFetchError) as caught:
        await fetch(url, FetchPolicy(), session, kind="image", resolver=resolver)
    message = str(caught.value)
    assert f"Cannot fetch input image URL '{url}'" in message
    assert says in message and HINT in message
    assert connector.hosts == [] and resolver.asked == []


async def test_the_refusal_message_names_address_reason_and_fix(session):
    with pytest.raises(InputFetchError) as caught:
        await fetch("http://10.0.0.5/cat.png", FetchPolicy(), session)
    assert str(caught.value) == (
        "Cannot fetch input URL 'http://10.0.0.5/cat.png': refused: 10.0.0.5 is a private "
        "address; the server does not fetch from its own network "
        "(orchard serve --allow-private-urls to allow)"
    )


@pytest.mark.parametrize("host", ["localhost", "2130706433", "127.1"])
async def test_names_resolving_to_loopback_are_refused_before_connecting(
    host, origin, session, connector, resolver
):
    """Real system resolution (/etc/hosts, numeric forms): still no network involved."""
    url = f"http://{host}:{origin.port}/image.png"
    with pytest.raises(InputFetchError, match=rf"{host} resolves to .*loopback address"):
        await fetch(url, FetchPolicy(), session, resolver=resolver)
    assert resolver.asked == [host] and connector.hosts == []


async def test_a_name_with_any_private_address_is_refused(session, connector):
    resolver = FakeResolver({"mixed.test": ["93.184.215.14", "10.1.2.3"]})
    with pytest.raises(InputFetchError, match=r"mixed.test resolves to 10.1.2.3, which is a priv"):
        await fetch("https://mixed.test/a.png", FetchPolicy(), session, resolver=resolver)
    assert connector.hosts == []


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.com/a.png", "gopher://127.0.0.1:70/", "data:,x"]
)
async def test_only_http_and_https_are_fetched(url, session, connector, resolver):
    with pytest.raises(InputFetchError, match=r"scheme .* is not supported"):
        await fetch(url, FetchPolicy(allow_private=True), session, resolver=resolver)
    assert connector.hosts == [] and resolver.asked == []


# -- exceptions to the check ---------------------------------------------------------------------


async def test_allowed_hosts_let_the_test_server_through(origin, session, connector):
    body = await fetch(origin.url("/image.png"), trusting(origin), session, kind="image")
    assert body == PNG and connector.hosts == ["127.0.0.1"]


async def test_an_allowed_host_on_another_port_is_still_refused(origin, session, connector):
    policy = FetchPolicy(allowed_hosts={f"127.0.0.1:{origin.port + 1}"})
    with pytest.raises(InputFetchError, match="loopback"):
        await fetch(origin.url("/image.png"), policy, session)
    assert connector.hosts == []


async def test_allow_private_lets_private_addresses_through(origin, session):
    assert await fetch(origin.url("/image.png"), FetchPolicy(allow_private=True), session) == PNG


async def test_the_connection_goes_to_the_checked_address_under_the_original_name(
    origin, session, connector
):
    """The name is resolved once, by the fetcher; the session never looks it up again."""
    resolver = FakeResolver({"media.orchard.test": ["127.0.0.1"]})
    policy = FetchPolicy(allowed_hosts={f"media.orchard.test:{origin.port}"})
    url = f"http://media.orchard.test:{origin.port}/host"
    body = await fetch(url, policy, session, resolver=resolver)
    assert body == f"media.orchard.test:{origin.port}".encode()
    assert resolver.asked == ["media.orchard.test"] and connector.hosts == ["127.0.0.1"]


@pytest.fixture
def certificate(tmp_path) -> tuple[str, str]:
    """A self-signed certificate for media.orchard.test (made with the openssl command)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    name = "media.orchard.test"
    request = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    files = ["-keyout", key, "-out", cert]
    subject = ["-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}"]
    subprocess.run(
        [*request, *files, *subject],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_tls_checks_the_certificate_against_the_original_name(certificate):
    """Connecting to the IP must keep SNI and the certificate check on the URL's host name."""
    cert, key = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    origin = Origin()
    server = TestServer(origin.app(), host="127.0.0.1", port=0)
    await server.start_server(ssl=server_tls)
    names = {"media.orchard.test": ["127.0.0.1"], "other.orchard.test": ["127.0.0.1"]}
    resolver = FakeResolver(names)
    policy = FetchPolicy(allowed_hosts=set(names))
    client_tls = ssl.create_default_context(cafile=cert)
    connector = aiohttp.TCPConnector(ssl=client_tls)
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            url = f"https://media.orchard.test:{server.port}/host"
            assert await fetch(url, policy, session, resolver=resolver) == (
                f"media.orchard.test:{server.port}".encode()
            )
            with pytest.raises(InputFetchError, match=r"not valid for 'other\.orchard\.test'"):
                await fetch(url.replace("media", "other"), policy, session, resolver=resolver)
    finally:
        await server.close()


async def test_open_fetch_session_fetches(origin):
    async with fetching.open_fetch_session() as session:
        assert await fetch(origin.url("/image.png"), trusting(origin), session) == PNG


# -- redirects -----------------------------------------------------------------------------------


async def test_redirects_are_followed(origin, session, connector):
    url = origin.url("/redirect?to=/image.png")
    assert await fetch(url, trusting(origin), session, kind="image") == PNG
    assert connector.hosts == ["127.0.0.1", "127.0.0.1"]


@pytest.mark.parametrize(
    ("target", "says"),
    [
        ("http://10.0.0.5/secret", "10.0.0.5 is a private address"),
        ("http://169.254.169.254/latest/meta-data/", "link-local address"),
        ("http://127.0.0.1:1/", "127.0.0.1 is a loopback address"),
        ("http://localhost:{port}/image.png", "localhost resolves to"),
        ("file:///etc/passwd", "scheme 'file' is not supported"),
    ],
)
async def test_a_redirect_to_a_refused_url_is_refused(target, says, origin, session, connector):
    target = target.format(port=origin.port)
    with pytest.raises(InputFetchError) as caught:
        await fetch(origin.url(f"/redirect?to={target}"), trusting(origin), session)
    assert f"after a redirect to '{target}'" in str(caught.value) and says in str(caught.value)
    assert connector.hosts == ["127.0.0.1"]  # the first hop only


async def test_redirects_are_limited(origin, session, connector):
    with pytest.raises(InputFetchError, match="more than 2 redirects"):
        await fetch(origin.url("/loop"), trusting(origin, max_redirects=2), session)
    assert len(connector.hosts) == 3


# -- size, time, status and type ------------------------------------------------------------------


async def test_a_streamed_body_stops_at_the_size_cap(origin, session):
    policy = trusting(origin, max_bytes=256 * 1024)
    with pytest.raises(InputFetchError, match="larger than 256 KiB"):
        await fetch(origin.url("/endless"), policy, session)
    await asyncio.wait_for(origin.client_gone.wait(), DEADLINE_S)
    assert origin.sent < 256 * fetching.MiB


async def test_a_declared_length_over_the_cap_is_refused_before_reading(origin, session):
    policy = trusting(origin, max_bytes=64 * fetching.MiB, timeout_s=DEADLINE_S)
    with pytest.raises(InputFetchError, match="larger than 64 MiB"):
        await fetch(origin.url("/declared-huge"), policy, session)


async def test_a_fetch_times_out(origin, session):
    policy = trusting(origin, timeout_s=0.2)
    with pytest.raises(InputFetchError, match=r"timed out after 0.2 s"):
        await fetch(origin.url("/held"), policy, session)
    origin.release.set()


async def test_http_errors_name_the_status(origin, session):
    with pytest.raises(InputFetchError, match=r"/missing\.png': HTTP 404 Not Found; check"):
        await fetch(origin.url("/missing.png"), trusting(origin), session)


@pytest.mark.parametrize(
    ("path", "kind", "fits"),
    [
        ("/page.html", "image", False),
        ("/image.png", "audio", False),
        ("/hello.txt", "video", False),
        ("/clip.mp4", "image", False),
        ("/blob", "image", True),
        ("/page.html", "text", True),
        ("/clip.mp4", "audio", True),
        ("/sound.wav", "audio", True),
    ],
)
async def test_a_content_type_contradicting_the_kind_is_refused(path, kind, fits, origin, session):
    if fits:
        assert await fetch(origin.url(path), trusting(origin), session, kind=kind)
        return
    with pytest.raises(InputFetchError, match=r"the response is .*, not "):
        await fetch(origin.url(path), trusting(origin), session, kind=kind)


def test_content_type_fits():
    assert fetching.content_type_fits("application/ld+json", "text")
    assert fetching.content_type_fits("IMAGE/JPEG", "image")
    assert not fetching.content_type_fits("text/html", "image")
    assert not fetching.content_type_fits("application/json", "image")


def test_refusal_reason_judges_embedded_ipv4():
    reason = fetching.refusal_reason
    assert reason(ipaddress.ip_address("93.184.215.14")) is None
    assert reason(ipaddress.ip_address("::ffff:93.184.215.14")) is None
    assert reason(ipaddress.ip_address("2002:a00:5::1")) == "a private address"  # 6to4 10.0.0.5
    assert reason(ipaddress.ip_address("2606:4700::1111")) is None


# -- a whole request ------------------------------------------------------------------------------


def _data(**fields: Any) -> resources_pb2.Data:
    return resources_pb2.Data(**fields)


def _request(origin: Origin) -> service_pb2.PostModelOutputsRequest:
    nested = _data(
        audio=resources_pb2.Audio(url=origin.url("/sound.wav")),
        parts=[
            resources_pb2.Part(data=_data(video=resources_pb2.Video(url=origin.url("/clip.mp4"))))
        ],
    )
    return service_pb2.PostModelOutputsRequest(
        model_id="m",
        inputs=[
            resources_pb2.Input(
                id="a", data=_data(image=resources_pb2.Image(url=origin.url("/image.png")))
            ),
            resources_pb2.Input(
                id="b", data=_data(text=resources_pb2.Text(url=origin.url("/hello.txt")))
            ),
            resources_pb2.Input(
                id="c", data=_data(parts=[resources_pb2.Part(id="p", data=nested)])
            ),
            resources_pb2.Input(id="d", data=_data(image=resources_pb2.Image(base64=b"inline"))),
        ],
    )


async def test_resolve_url_inputs_replaces_every_url_with_its_bytes(origin, session):
    request = _request(origin)
    before = request.SerializeToString()
    resolved = await resolve_url_inputs(request, trusting(origin), session)
    a, b, c, d = resolved.inputs
    assert (a.data.image.base64, a.data.image.url) == (PNG, "")
    assert (b.data.text.raw, b.data.text.url) == ("héllo wörld", "")
    nested = c.data.parts[0].data
    assert (nested.audio.base64, nested.audio.url) == (WAV, "")
    assert (nested.parts[0].data.video.base64, nested.parts[0].data.video.url) == (MP4, "")
    assert d.data.image.base64 == b"inline" and c.data.parts[0].id == "p"
    assert request.SerializeToString() == before  # the caller's request is untouched


async def test_resolve_url_inputs_fetches_a_repeated_url_once(origin, session):
    image = resources_pb2.Image(url=origin.url("/image.png"))
    request = service_pb2.PostModelOutputsRequest(
        inputs=[resources_pb2.Input(data=_data(image=image)) for _ in range(3)]
    )
    resolved = await resolve_url_inputs(request, trusting(origin), session)
    assert [i.data.image.base64 for i in resolved.inputs] == [PNG] * 3
    assert origin.hits == {"image.png": 1}


async def test_resolve_url_inputs_bounds_parallel_fetches(origin, session):
    urls = [origin.url(f"/crowded/{n}") for n in range(6)]
    request = service_pb2.PostModelOutputsRequest(
        inputs=[resources_pb2.Input(data=_data(image=resources_pb2.Image(url=u))) for u in urls]
    )
    resolved = await resolve_url_inputs(request, trusting(origin, concurrency=2), session)
    assert [i.data.image.base64 for i in resolved.inputs] == [PNG] * 6
    assert origin.peak == 2  # in parallel, two at a time


async def test_resolve_url_inputs_fails_naming_the_failing_url(origin, session):
    request = _request(origin)
    request.inputs[2].data.parts[0].data.audio.url = "http://10.0.0.5/a.wav"
    with pytest.raises(InputFetchError, match=r"input audio URL 'http://10.0.0.5/a.wav': refused"):
        await resolve_url_inputs(request, trusting(origin), session)


async def test_resolve_url_inputs_requires_utf8_text(origin, session):
    request = service_pb2.PostModelOutputsRequest(
        inputs=[
            resources_pb2.Input(data=_data(text=resources_pb2.Text(url=origin.url("/latin1.txt"))))
        ]
    )
    with pytest.raises(InputFetchError, match=r"latin1\.txt': the response is not UTF-8 text"):
        await resolve_url_inputs(request, trusting(origin), session)


async def test_the_urls_of_one_request_share_its_size_budget(origin, session):
    urls = [origin.url(f"/endless?n={n}") for n in range(2)]  # each alone is under max_bytes
    request = service_pb2.PostModelOutputsRequest(
        inputs=[resources_pb2.Input(data=_data(image=resources_pb2.Image(url=u))) for u in urls]
    )
    policy = trusting(origin, max_bytes=fetching.MiB, max_request_bytes=fetching.MiB)
    with pytest.raises(RequestTooLarge) as raised:
        await resolve_url_inputs(request, policy, session)
    assert raised.value.message == (
        "the request with its URL inputs fetched is larger than 1 MiB, the server's limit for "
        "one request; send fewer or smaller inputs, or ask the operator to raise the limit "
        "(orchard serve --max-request-bytes)"
    )
    await asyncio.wait_for(origin.client_gone.wait(), DEADLINE_S)
    assert origin.sent < 256 * fetching.MiB  # the fetches stopped


async def test_a_declared_length_over_the_request_budget_is_refused_before_reading(origin, session):
    policy = trusting(origin, max_bytes=2048 * fetching.MiB, timeout_s=DEADLINE_S)
    with pytest.raises(RequestTooLarge, match="larger than 64 MiB"):
        await fetch(origin.url("/declared-huge"), policy, session)


async def test_a_body_used_by_many_inputs_counts_once_per_use(origin, session):
    image = resources_pb2.Image(url=origin.url("/image.png"))
    request = service_pb2.PostModelOutputsRequest(
        inputs=[resources_pb2.Input(data=_data(image=image)) for _ in range(3)]
    )
    fits_once = request.ByteSize() + len(PNG) + 64
    with pytest.raises(RequestTooLarge, match=f"larger than {fits_once} bytes"):
        await resolve_url_inputs(request, trusting(origin, max_request_bytes=fits_once), session)
    assert origin.hits == {"image.png": 1}


async def test_a_request_without_urls_comes_back_equal(session):
    request = service_pb2.PostModelOutputsRequest(
        inputs=[resources_pb2.Input(data=_data(text=resources_pb2.Text(raw="hi")))]
    )
    assert await resolve_url_inputs(request, FetchPolicy(), session) == request
