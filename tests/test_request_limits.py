"""How large a request the server takes: `orchard serve --max-request-bytes`, the refusal on
the wire (and what the SDK makes of it), and URL inputs that would pass the limit once fetched."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from clarifai_grpc.grpc.api import resources_pb2 as r
from clarifai_grpc.grpc.api import service_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2 as sc
from click.testing import CliRunner

from orchard import errors, wire
from orchard.cli import serve as serve_module
from orchard.client.channels import Target, translate_rpc_error
from orchard.server.app import Settings
from orchard.testing import ServerThread
from tests.resources import make_deployment, make_stack

LIMIT = 64 * 1024


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    """A server that takes requests of at most 64 KiB, and holds a call 0.1 s at most."""
    with ServerThread(
        tmp_path / "home", offline=True, max_request_bytes=LIMIT, hold_seconds=0.1
    ) as running:
        yield running


@pytest.fixture
def deployed(api) -> None:
    make_deployment(api, "dep", version=make_stack(api))


def text_request(size: int = 0, url: str = "") -> service_pb2.PostModelOutputsRequest:
    text = r.Text(url=url) if url else r.Text(raw="x" * size)
    return service_pb2.PostModelOutputsRequest(
        runner_selector=r.RunnerSelector(deployment=r.Deployment(id="dep")),
        inputs=[r.Input(data=r.Data(text=text))],
    )


def predict(server: ServerThread, request: service_pb2.PostModelOutputsRequest):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        metadata = (("authorization", f"Key {server.pat}"),)
        return wire.callable_for(channel, "PostModelOutputs")(
            request, metadata=metadata, timeout=30
        )


def test_the_default_limit_is_64_mib():
    assert Settings().max_request_bytes == 64 * 1024 * 1024


def test_a_request_over_the_limit_is_refused_naming_it_and_the_fix(server, deployed):
    request = text_request(LIMIT + 1)
    with pytest.raises(grpc.RpcError) as raised:
        predict(server, request)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"({request.ByteSize()} vs. {LIMIT})" in raised.value.details()
    err = translate_rpc_error(raised.value, "PostModelOutputs", Target("h", 1, False), 30.0)
    assert type(err) is errors.RequestTooLarge
    assert err.message == (
        f"Orchard at h:1 refused PostModelOutputs: the request is {request.ByteSize()} bytes, "
        f"over the server's limit of {LIMIT} bytes; send smaller inputs, or ask the operator "
        "to raise the limit (orchard serve --max-request-bytes)"
    )


def test_a_request_within_the_limit_gets_through(server, deployed):
    response = predict(server, text_request(LIMIT - 1024))
    assert response.status.code == sc.MODEL_DEPLOYING  # read, routed and held for a replica


def test_url_inputs_that_pass_the_limit_once_fetched_are_refused_in_band(
    server, deployed, file_server
):
    url = file_server("big.txt", b"y" * LIMIT)
    response = predict(server, text_request(url=url))
    assert response.status.code == sc.RPC_MAX_MESSAGE_SIZE_EXCEEDED
    assert response.status.description == (
        "the request with its URL inputs fetched is larger than 64 KiB, the server's limit for "
        "one request; send fewer or smaller inputs, or ask the operator to raise the limit "
        "(orchard serve --max-request-bytes)"
    )


@pytest.fixture
def serve_settings(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    """`orchard serve` records the settings it would start the server with, and starts none."""
    started: list[Settings] = []

    async def record(settings: Settings) -> None:
        started.append(settings)

    monkeypatch.setattr(serve_module, "_serve", record)
    return started


@pytest.mark.parametrize(
    ("given", "size"),
    [(None, 64 << 20), ("1Mi", 1 << 20), ("1000", 1000), ("1.5Gi", 3 << 29)],
)
def test_serve_takes_the_limit_as_a_quantity(tmp_path, serve_settings, given, size):
    args = ["--home", str(tmp_path / "home")] + (["--max-request-bytes", given] if given else [])
    result = CliRunner().invoke(serve_module.serve, args)
    assert result.exit_code == 0, result.output
    assert serve_settings[0].max_request_bytes == size


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ("lots", "'lots' is not a quantity"),
        ("0", "'0' must be a whole number of bytes from 1 to 2Gi - 1"),
        ("2Gi", "'2Gi' must be a whole number of bytes from 1 to 2Gi - 1"),
        ("1500m", "'1500m' must be a whole number of bytes"),
    ],
)
def test_serve_refuses_a_bad_limit(tmp_path, serve_settings, given, problem):
    result = CliRunner().invoke(serve_module.serve, ["--max-request-bytes", given])
    assert result.exit_code != 0
    assert problem in " ".join(result.output.split())
    assert serve_settings == []
