"""The local link: the ``ProcessRunnerItems`` stream over a Unix socket, without HTTP/2.

A replica on the server's own host reaches the server at ``link:PATH``, a Unix socket under the
server's home (a folder only the server's user may enter). The stream is the one described in
:mod:`orchard.work_protocol`, message for message; only the framing differs:

- every message is one frame: its length as 4 bytes (big-endian), then the serialized message;
- the runner's first frame is its credentials, the UTF-8 value of the ``authorization``
  metadata of the gRPC stream (``Key <token>``); then come its hello, outputs and ends
  (``PostRunnerItemOutputsRequest``), while the server sends items and its refusal, if any
  (``MultiRunnerItemResponse``);
- either side ends the stream by closing its end; a half-close (``done_writing``) ends the
  runner's messages and leaves the server's open, as on gRPC.

Why a second transport: each message of a grpc.aio stream passes through grpc's completion-queue
thread on its way to the event loop, on both sides; a frame on a socket that the loop reads
itself costs one ``write`` and one ``read``. For a unary call on this host that is two grpc
messages fewer at each end (``benchmarks/relay_floor.py`` measures both). Runners elsewhere, and
runners written against the official SDK, use the gRPC stream; the server serves both.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from typing import Any

import grpc
from google.protobuf.message import Message

from orchard import work_protocol

SCHEME = "link:"
HEADER = struct.Struct("!I")
MAX_FRAME_BYTES = 1 << 30  # unless the reader says less (the server: its message limit)
HIGH_WATER_BYTES = 1 << 20  # unsent bytes past which a writer waits


class LinkError(ConnectionError):
    """The link broke, or the other side sent something that is not a frame."""


def is_link(address: str) -> bool:
    return address.startswith(SCHEME)


def link_address(path: str) -> str:
    return f"{SCHEME}{path}"


def frame(message: Message | bytes) -> bytes:
    """One frame: the length, then the bytes (a message is serialized first)."""
    data = message if isinstance(message, bytes) else message.SerializeToString()
    return HEADER.pack(len(data)) + data


async def read_frame(
    reader: asyncio.StreamReader, max_bytes: int = MAX_FRAME_BYTES
) -> bytes | None:
    """The next frame's bytes; None when the other side closed its end between frames.
    Raises :class:`LinkError` on a frame cut short or over ``max_bytes``."""
    try:
        header = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise LinkError("the link closed in the middle of a frame header") from None
        return None
    except ConnectionError:
        return None
    (size,) = HEADER.unpack(header)
    if size > max_bytes:
        raise LinkError(f"a frame of {size} bytes is over the limit of {max_bytes}")
    try:
        return await reader.readexactly(size)
    except (asyncio.IncompleteReadError, ConnectionError):
        raise LinkError("the link closed in the middle of a frame") from None


async def write_frame(writer: asyncio.StreamWriter, message: Message | bytes) -> None:
    """Write one frame; waits only while the socket's buffer is full. Raises LinkError once
    the link is closed."""
    if writer.is_closing():
        raise LinkError("the link is closed")
    writer.write(frame(message))
    try:
        await writer.drain()
    except ConnectionError as exc:
        raise LinkError(f"the link broke: {exc}") from None


def write_now(
    writer: asyncio.StreamWriter, message: Message, high_water: int | None = None
) -> bool:
    """Write one frame without waiting; False (nothing written) when the link is closing, or
    its buffer holds more than ``high_water`` bytes (None: no bound)."""
    transport = writer.transport
    if transport.is_closing():
        return False
    if high_water is not None and transport.get_write_buffer_size() > high_water:
        return False
    transport.write(frame(message))
    return True


class LinkCall:
    """The runner's end of a link, with the part of a grpc.aio stream-stream call that the
    runner uses: ``write``, ``read`` (``grpc.aio.EOF`` at the end), ``done_writing`` and
    ``cancel``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    @classmethod
    async def open(cls, address: str, pat: str) -> LinkCall:
        """Connect to ``link:PATH`` and send the credentials; OSError when nobody listens."""
        reader, writer = await asyncio.open_unix_connection(address.removeprefix(SCHEME))
        call = cls(reader, writer)
        await write_frame(writer, f"Key {pat}".encode())
        return call

    async def write(self, message: work_protocol.Outgoing) -> None:
        await write_frame(self._writer, message)

    def write_now(self, message: work_protocol.Outgoing) -> bool:
        """Write without waiting; False (nothing written) when the link is closing or its
        buffer is over :data:`HIGH_WATER_BYTES`: then ``write`` waits for room."""
        return write_now(self._writer, message, HIGH_WATER_BYTES)

    async def read(self) -> Any:
        """The server's next message, or ``grpc.aio.EOF`` once it closed the link."""
        data = await read_frame(self._reader)
        if data is None:
            return grpc.aio.EOF
        return work_protocol.Incoming.FromString(data)

    async def done_writing(self) -> None:
        if not self._writer.is_closing() and self._writer.can_write_eof():
            self._writer.write_eof()

    def cancel(self) -> bool:
        self._writer.close()
        return True

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()
