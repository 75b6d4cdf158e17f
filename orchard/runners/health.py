"""Health probes over HTTP, with nothing but asyncio (the model's environment has no web stack).

``GET`` of a probe path answers 200 when its check holds and 503 when not; any other method or
path answers 404. One request per connection; the body is ``ok`` or ``not ready``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping

log = logging.getLogger("orchard.runners")

Check = Callable[[], bool]
LIVENESS, READINESS, STARTUP = "/healthz/liveness", "/healthz/readiness", "/healthz/startup"
READ_TIMEOUT_S = 5.0
_REASONS = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}


class HealthServer:
    """Serves ``checks`` (path → check) on ``host:port`` (port 0: any free port)."""

    def __init__(self, checks: Mapping[str, Check], host: str = "127.0.0.1", port: int = 0):
        self.checks, self.host, self.port = dict(checks), host, port
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        """Listen; returns the port."""
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("health probes on http://%s:%d/healthz/", self.host, self.port)
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def status_of(self, method: str, path: str) -> int:
        check = self.checks.get(path.split("?", 1)[0])
        if method != "GET" or check is None:
            return 404
        return 200 if check() else 503

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(_read_head(reader), READ_TIMEOUT_S)
            method, path = [*request_line.split(), "", ""][:2]
            writer.write(_response(self.status_of(method, path)))
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def _read_head(reader: asyncio.StreamReader) -> str:
    """The request line; the headers are read and ignored."""
    request_line = (await reader.readline()).decode("latin-1")
    while (await reader.readline()).strip():
        pass
    return request_line


def _response(status: int) -> bytes:
    body = b"ok\n" if status == 200 else b"not ready\n" if status == 503 else b"not found\n"
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body
