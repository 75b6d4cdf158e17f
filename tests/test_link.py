"""The local link (``orchard.runners.link``): frames, and the server's end refusing what is not
a runner stream. Serving over it end to end is in test_orchestration (the server's own
replicas use it) and test_e2e_predictions (a replica reconnecting after a server restart)."""

from __future__ import annotations

import asyncio
import contextlib
import os

import grpc
import pytest
from clarifai_grpc.grpc.api import service_pb2

from orchard import work_protocol
from orchard.runners import link
from orchard.testing import ServerThread


def reader_of(data: bytes, *, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


async def test_frames_round_trip_and_end_cleanly_between_frames():
    message = work_protocol.draining()
    reader = reader_of(link.frame(message) + link.frame(b"raw"))
    assert work_protocol.Outgoing.FromString(await link.read_frame(reader)) == message
    assert await link.read_frame(reader) == b"raw"
    assert await link.read_frame(reader) is None


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\x00\x00", "in the middle of a frame header"),
        (link.HEADER.pack(10) + b"short", "in the middle of a frame"),
        (link.HEADER.pack(link.MAX_FRAME_BYTES + 1), "over the limit"),
    ],
)
async def test_a_frame_cut_short_or_too_large_is_a_link_error(data, problem):
    with pytest.raises(link.LinkError, match=problem):
        await link.read_frame(reader_of(data))


async def test_opening_a_link_nobody_listens_on_is_an_os_error(tmp_path):
    with pytest.raises(OSError):
        await link.LinkCall.open(link.link_address(str(tmp_path / "none.sock")), "pat")


@pytest.fixture
def server(tmp_path):
    with ServerThread(tmp_path / "home") as server:
        yield server


async def hello_over_link(server: ServerThread, pat: str) -> list[object]:
    """What the server answers a runner hello on its link, up to the end of the stream."""
    address = server.server.local_address
    call = await link.LinkCall.open(address, pat)
    try:
        # A refused PAT may close the link before the hello is written: the refusal is still
        # there to read.
        with contextlib.suppress(ConnectionError):
            await call.write(
                work_protocol.hello(work_protocol.Hello("no-such-runner", "np", "cc", "r", 1))
            )
        answers = []
        while (message := await call.read()) is not grpc.aio.EOF:
            answers.append(message)
        return answers
    finally:
        await call.close()


async def test_the_server_listens_on_a_private_socket_under_its_home(server):
    address = server.server.local_address
    assert link.is_link(address)
    path = address.removeprefix(link.SCHEME)
    assert path.startswith(str(server.settings.home))
    assert os.stat(os.path.dirname(path)).st_mode & 0o777 == 0o700
    # Replicas that run as their tenants' own uids (a root server's sandbox) must connect too;
    # the 0700 folder, or a sandbox's bind of the socket alone, is what keeps others out.
    local = server.server.runtime.providers.get("local")
    shared = local.sandbox.separate_uids
    assert os.stat(path).st_mode & 0o777 == (0o666 if shared else 0o600)


async def test_a_bad_pat_is_refused_in_band_and_the_link_closed(server):
    answers = await hello_over_link(server, "not-a-pat")
    assert len(answers) == 1
    assert "PAT" in work_protocol.refusal(answers[0])


async def test_an_unknown_runner_is_refused_with_its_id(server):
    answers = await hello_over_link(server, server.pat)
    assert len(answers) == 1
    assert "no-such-runner" in work_protocol.refusal(answers[0])


async def test_garbage_on_a_link_ends_that_link_only(server):
    reader, writer = await asyncio.open_unix_connection(
        server.server.local_address.removeprefix(link.SCHEME)
    )
    writer.write(link.frame(f"Key {server.pat}".encode()) + link.frame(b"\xff\xff not a message"))
    await writer.drain()
    answers = []
    while (data := await link.read_frame(reader)) is not None:
        answers.append(service_pb2.MultiRunnerItemResponse.FromString(data))
    writer.close()
    assert answers == []  # the stream ended before a hello, and the server closed the link;
    # it still takes new links
    assert len(await hello_over_link(server, server.pat)) == 1
