"""The RPC plumbing: what the server answers to request messages that do not parse."""

from __future__ import annotations

import logging

import grpc
import pytest

from orchard.server.rpc import RateLimitedLog
from orchard.wire import SERVICE

GARBAGE = b"\xff\xff\xff"  # a field tag whose varint never ends: no message parses from it
PREFIX = f"/{SERVICE.full_name}/"


def raw(channel: grpc.Channel, name: str, shape: str = "unary_unary"):
    """Method ``name`` with bytes in and out, so that anything can be sent."""
    return getattr(channel, shape)(PREFIX + name)


def refused_as_invalid(exc: grpc.RpcError, message_type: str) -> None:
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert exc.details() == (
        f"the request is not a valid clarifai.api.{message_type} message; "
        "send one serialized with the clarifai-grpc protobufs"
    )


@pytest.mark.parametrize(
    ("name", "shape", "message_type"),
    [
        ("GetUser", "unary_unary", "GetUserRequest"),  # a unary handler
        ("PostModelOutputs", "unary_unary", "PostModelOutputsRequest"),  # served as a stream
        ("GenerateModelOutputs", "unary_stream", "PostModelOutputsRequest"),
    ],
)
def test_a_malformed_request_is_invalid_argument_without_internals(
    server, name, shape, message_type, caplog
):
    with (
        grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel,
        pytest.raises(grpc.RpcError) as raised,
    ):
        call = raw(channel, name, shape)(GARBAGE, timeout=30)
        if shape == "unary_stream":
            list(call)
    refused_as_invalid(raised.value, message_type)
    assert not [r for r in caplog.records if r.exc_info], "no traceback is logged"


def test_a_malformed_message_in_a_stream_ends_it_with_invalid_argument(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        call = raw(channel, "StreamModelOutputs", "stream_stream")(
            iter([GARBAGE]), metadata=(("authorization", f"Key {server.pat}"),), timeout=30
        )
        with pytest.raises(grpc.RpcError) as raised:
            list(call)
    refused_as_invalid(raised.value, "PostModelOutputsRequest")


def test_malformed_requests_are_logged_once_a_minute(server, caplog):
    caplog.set_level(logging.WARNING, logger="orchard.server.rpc")
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        for _ in range(20):
            with pytest.raises(grpc.RpcError):
                raw(channel, "GetUser")(GARBAGE, timeout=30)
    lines = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("refused a malformed GetUser request from ")
    assert lines[0].endswith("(DecodeError)")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# (seconds since the start, whether it is logged, what is said of those left out)
RATE_TABLE = [
    (0.0, True, ""),
    (1.0, False, ""),
    (59.9, False, ""),
    (60.0, True, " (2 more like it in the last 60 s not logged)"),
    (61.0, False, ""),
    (200.0, True, " (1 more like it in the last 60 s not logged)"),
    (300.0, True, ""),
]


def test_the_rate_limited_log_as_a_table(caplog):
    caplog.set_level(logging.WARNING, logger="test.rate")
    clock = Clock()
    limited = RateLimitedLog(logging.getLogger("test.rate"), 60.0, clock)
    for at, logged, suffix in RATE_TABLE:
        clock.now = at
        caplog.clear()
        assert limited.warning("refused %s", "x") is logged, at
        assert [r.getMessage() for r in caplog.records] == (
            [f"refused x{suffix}"] if logged else []
        ), at
