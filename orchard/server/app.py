"""Assembling and running the API server."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from orchard.providers import ProviderRegistry
from orchard.server import apps, cloud, compute_clusters, deployments, models, nodepools, users
from orchard.server.rpc import Dispatcher, Router
from orchard.services import users as user_service
from orchard.store import Store
from orchard.store.db import sqlite_url

log = logging.getLogger(__name__)
DEFAULT_PORT = 7600
MAX_MESSAGE_BYTES = 1 << 30


@dataclass
class Settings:
    home: Path = field(default_factory=lambda: Path.home() / ".orchard")
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    database_url: str | None = None
    bootstrap_user: str = "admin"
    bootstrap_pat: str | None = None

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Settings with the bootstrap user and PAT from ORCHARD_BOOTSTRAP_USER/_PAT."""
        settings = cls(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
        settings.bootstrap_user = os.environ.get("ORCHARD_BOOTSTRAP_USER", settings.bootstrap_user)
        settings.bootstrap_pat = os.environ.get("ORCHARD_BOOTSTRAP_PAT") or settings.bootstrap_pat
        return settings

    @property
    def url(self) -> str:
        return self.database_url or sqlite_url(self.home / "orchard.db")

    @property
    def pat_file(self) -> Path:
        return self.home / f"{self.bootstrap_user}.pat"


def build_router() -> Router:
    router = Router()
    for module in (users, apps, models, cloud, compute_clusters, nodepools, deployments):
        router.include(module.router)
    return router


def bootstrap(store: Store, settings: Settings) -> str | None:
    """Create the first user and PAT; a generated PAT is written to a 0600 file under home.
    Returns the path of that file when one was written."""
    with store.session() as session:
        token = user_service.ensure_bootstrap(
            session, settings.bootstrap_user, settings.bootstrap_pat
        )
    if token is None:
        return None
    fd = os.open(settings.pat_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return str(settings.pat_file)


class OrchardServer:
    """The gRPC server with its store. ``start`` binds and returns the port."""

    def __init__(self, settings: Settings, providers: ProviderRegistry | None = None) -> None:
        self.settings = settings
        settings.home.mkdir(parents=True, exist_ok=True)
        self.store = Store(settings.url)
        self.pat_file = bootstrap(self.store, settings)
        self.dispatcher = Dispatcher(build_router(), self.store, providers or ProviderRegistry())
        self.port = 0
        self._grpc: grpc.aio.Server | None = None

    async def start(self) -> int:
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
            ]
        )
        server.add_generic_rpc_handlers((self.dispatcher.generic_handler(),))
        self.port = server.add_insecure_port(f"{self.settings.host}:{self.settings.port}")
        if self.port == 0:
            raise OSError(
                f"cannot listen on {self.settings.host}:{self.settings.port}; "
                "is another server using the port? pick one with --port"
            )
        await server.start()
        self._grpc = server
        return self.port

    async def stop(self, grace: float = 5.0) -> None:
        """Finish in-flight calls (up to ``grace`` seconds), then release everything."""
        if self._grpc is not None:
            await self._grpc.stop(grace)
            self._grpc = None
        self.dispatcher.close()
        self.store.close()

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.port}"
