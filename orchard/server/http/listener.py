"""The HTTP listener: uvicorn serving one Starlette app inside the server's event loop.

uvicorn runs here as a part of the server, not as its own program: it binds the socket the
server asks for, never installs signal handlers (the server owns SIGINT and SIGTERM), and is
stopped by the server's own ``stop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator

import uvicorn
from starlette.types import ASGIApp


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves the process's signals to its owner."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class HttpListener:
    """``app`` on ``host:port`` (0: a free port) until :meth:`stop`."""

    def __init__(self, app: ASGIApp, host: str, port: int, grace: float = 5.0) -> None:
        self.config = uvicorn.Config(
            app,
            host=host,
            port=port,
            loop="none",  # the server's running loop
            http="httptools",
            lifespan="off",
            access_log=False,
            log_level="warning",
            timeout_graceful_shutdown=max(1, int(grace)),
            server_header=False,
        )
        self.server = _EmbeddedServer(self.config)
        self._socket: socket.socket | None = None
        self._loop: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self) -> int:
        """Bind and serve; returns the bound port."""
        self._socket = self.config.bind_socket()
        self.port = int(self._socket.getsockname()[1])
        self.config.load()
        self.server.lifespan = self.config.lifespan_class(self.config)
        await self.server.startup(sockets=[self._socket])
        self._loop = asyncio.create_task(self.server.main_loop(), name="orchard-http")
        return self.port

    async def stop(self) -> None:
        """Stop accepting, let open requests finish within the grace, then close."""
        if self._loop is None:
            return
        self.server.should_exit = True
        await self._loop
        self._loop = None
        await self.server.shutdown(sockets=[self._socket] if self._socket else None)
        if self._socket is not None:
            self._socket.close()
            self._socket = None
