"""A runner's hello: what the server accepts, and how it refuses the rest (in-band)."""

from __future__ import annotations

import grpc
import pytest
from clarifai_grpc.grpc.api import resources_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2 as sc
from clarifai_grpc.grpc.api.status import status_pb2

from orchard import wire, work_protocol


def hello(details: str = '{"capacity": 4}', **fields: str) -> work_protocol.Outgoing:
    message = work_protocol.Outgoing(
        runner_id=fields.pop("runner_id", "r1"),
        status=status_pb2.Status(code=sc.RUNNER_STREAM_START, details=details),
    )
    user_id = fields.pop("user_id", "")
    message.user_app_id.CopyFrom(resources_pb2.UserAppIDSet(user_id=user_id))
    for name, value in fields.items():
        setattr(message, name, value)
    return message


ACCEPTED = [
    ('{"capacity": 4}', 4),
    ("", 1),
    ("{}", 1),
    ('{"capacity": 1024}', 1024),
    ('{"capacity": 8.0}', 8),
]

REFUSED = [
    (
        '{"capacity": 1e400}',
        'capacity Infinity is not a whole number; status.details must be JSON like '
        '{"capacity": 4} (1 to 1024)',
    ),
    ('{"capacity": 2.5}', "capacity 2.5 is not a whole number"),
    ('{"capacity": true}', "capacity true is not a whole number"),
    ('{"capacity": "4"}', 'capacity "4" is not a whole number'),
    ('{"capacity": null}', "capacity null is not a whole number"),
    ('{"capacity": 0}', "capacity 0 is out of range"),
    ('{"capacity": 1025}', "capacity 1025 is out of range"),
    ('{"capacity": 99999999999999999999999}', "capacity 99999999999999999999999 is out of range"),
    ("[" * 100_000, "status.details must be JSON like"),
    ("[4]", "status.details must be JSON like"),
    ("not json", "status.details must be JSON like"),
]  # fmt: skip


@pytest.mark.parametrize(("details", "capacity"), ACCEPTED)
def test_accepted_capacities(details, capacity):
    assert work_protocol.read_hello(hello(details)).capacity == capacity


@pytest.mark.parametrize(("details", "reason"), REFUSED)
def test_refused_capacities_say_why(details, reason):
    with pytest.raises(ValueError) as raised:
        work_protocol.read_hello(hello(details))
    assert str(raised.value).startswith(reason)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"runner_id": ""}, "the hello needs runner_id"),
        ({"runner_id": "r" * 257}, "the hello's runner_id must be at most 256 printable"),
        ({"runner_replica_id": "a\nb"}, "the hello's runner_replica_id must be at most 256"),
        ({"nodepool_id": "n" * 300}, "the hello's nodepool_id must be at most 256"),
        ({"user_id": "\x00"}, "the hello's user_app_id.user_id must be at most 256"),
    ],
)
def test_refused_ids_say_why(fields, reason):
    with pytest.raises(ValueError) as raised:
        work_protocol.read_hello(hello(**fields))
    assert str(raised.value).startswith(reason)


def test_a_hello_with_an_absurd_capacity_is_refused_in_band(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        answers = list(
            wire.callable_for(channel, "ProcessRunnerItems")(
                iter([hello('{"capacity": 1e400}')]),
                metadata=(("authorization", f"Key {server.pat}"),),
                timeout=30,
            )
        )
    assert answers[-1].status.code == sc.RUNNER_INVALID_ARGUMENT
    assert answers[-1].status.description.startswith("capacity Infinity is not a whole number")
    assert work_protocol.refusal(answers[-1])  # the runner exits instead of reconnecting
