"""A testing kit: a real Orchard server in a background thread, for tests and notebooks.

    with ServerThread(tmp_path) as server:
        User(user_id=server.user_id, base_url=server.base_url, pat=server.pat)...

The server is the real one (gRPC on loopback, SQLite or the given database URL); only its
event loop runs in a thread of the calling process so that synchronous SDK calls can be made.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any

from orchard.server.app import OrchardServer, Settings
from orchard.services import users


class ServerThread:
    def __init__(
        self,
        home: Path,
        *,
        database_url: str | None = None,
        user_id: str = "admin",
        **settings: Any,
    ) -> None:
        """``settings`` are further :class:`~orchard.server.app.Settings` fields (e.g.
        ``offline=True`` to build model environments from uv's cache only, or
        ``orchestrate=True`` for a server that starts replicas itself)."""
        self.pat = secrets.token_hex(16)
        self.user_id = user_id
        # Tests attach their replicas by hand and make their own clusters unless they ask.
        settings.setdefault("orchestrate", False)
        settings.setdefault("default_cluster", False)
        settings.setdefault("metrics_port", None)
        self.settings = Settings(
            home=home,
            port=0,
            database_url=database_url,
            bootstrap_user=user_id,
            bootstrap_pat=self.pat,
            **settings,
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, daemon=True, name="orchard-test-server"
        )
        self.server: OrchardServer | None = None

    def _run(self, coro: object) -> object:
        future: Future[object] = asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]
        return future.result(timeout=60)

    def start(self) -> ServerThread:
        self._thread.start()

        async def start() -> OrchardServer:
            server = OrchardServer(self.settings)
            await server.start()
            return server

        self.server = self._run(start())  # type: ignore[assignment]
        return self

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def create_user(self, user_id: str) -> str:
        """A new user on this server; returns their PAT."""
        assert self.server is not None
        with self.server.store.session() as session:
            users.create_user(session, user_id)
            return users.create_pat(session, user_id, description="test")[1]

    def stop(self) -> None:
        if self.server is not None:
            self._run(self.server.stop(grace=1.0))
            self.server = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
