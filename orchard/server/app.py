"""Assembling and running the API server."""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import uv
from sqlalchemy import select
from sqlalchemy.orm import Session

from orchard.configs import ComputeClusterSpec, NodepoolSpec
from orchard.dispatch.dispatcher import Dispatcher, DispatchSettings
from orchard.orchestration.reconciler import Orchestrator
from orchard.orchestration.store_edge import StoreEdge
from orchard.orchestration.view import LiveView
from orchard.orchestration.world import OrchestratorSettings
from orchard.providers import ProviderRegistry
from orchard.providers.local import LocalProvider
from orchard.providers.ray import RayClusterConfig, RayProvider
from orchard.providers.sandbox import choose_sandbox
from orchard.quotas import Quotas
from orchard.server import (
    apps,
    cloud,
    compute_clusters,
    deployments,
    logs,
    models,
    nodepools,
    predictions,
    runners,
    uploads,
    users,
    work,
)
from orchard.server.builds import BuildQueue
from orchard.server.home import prepare_home
from orchard.server.http.app import HttpContext, build_app
from orchard.server.http.listener import HttpListener
from orchard.server.metrics import Metrics
from orchard.server.predictions import UrlFetcher
from orchard.server.rpc import GrpcAdapter, Router, Runtime
from orchard.server.timeseries import TimeSeries
from orchard.server.work import LinkServer
from orchard.services import compute_clusters as cluster_service
from orchard.services import nodepools as nodepool_service
from orchard.services import users as user_service
from orchard.services.builds import BuildSettings, EnvBuilder
from orchard.services.fetch import FetchPolicy
from orchard.services.packages import PackageStore
from orchard.store import Store
from orchard.store.db import sqlite_url
from orchard.store.models import ComputeClusterRow, UserRow

log = logging.getLogger(__name__)
DEFAULT_PORT = 7600
DEFAULT_MAX_REQUEST_BYTES = 64 << 20
MAX_SEND_BYTES = 1 << 30  # what the server sends is made of what it accepted within its limit


@dataclass
class Settings:
    home: Path = field(default_factory=lambda: Path.home() / ".orchard")
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    database_url: str | None = None
    bootstrap_user: str = "admin"
    bootstrap_pat: str | None = None
    # Model environments: extra wheel folders, no index at all, and whether a python_version
    # that is not installed may be built with the server's own Python (logged when it is).
    find_links: list[Path] = field(default_factory=list)
    offline: bool = False
    python_fallback: bool = True
    # How long a prediction may wait for a replica of its deployment before it is answered
    # MODEL_DEPLOYING (which the official SDK retries).
    hold_seconds: float = 30.0
    # URL inputs: never fetched from private, loopback or link-local addresses unless allowed
    # (all of them, or the "host[:port]" entries listed).
    allow_private_urls: bool = False
    allowed_url_hosts: list[str] = field(default_factory=list)
    # The largest message the server accepts (gRPC, and its replicas' frames on the local link;
    # gRPC answers RESOURCE_EXHAUSTED naming it), and the largest prediction request it sends a
    # replica, URL inputs fetched (RequestTooLarge). Replicas it starts send outputs within it.
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    # Orchestration: start, scale and stop the replicas of deployments on dedicated clusters
    # (off: replicas are attached by hand, as on local-dev clusters). A stopped replica gets
    # drain_seconds to finish what it holds. default_cluster: on the first start, give the
    # bootstrap user a cluster "local" with a nodepool "default" that is this host.
    orchestrate: bool = True
    drain_seconds: float = 10.0
    default_cluster: bool = True
    # The HTTP listener (REST/JSON, the OpenAI-compatible API, /metrics, the dashboard) at
    # http://host:http_port/ (0: a free port; None: off).
    http_port: int | None = DEFAULT_PORT + 1
    # Ray clusters the `ray` provider may run replicas on (compute clusters name them as their
    # region), and the host:port replicas on other machines reach this server at (default:
    # host:port, with a wildcard host read as loopback).
    ray_clusters: list[RayClusterConfig] = field(default_factory=list)
    advertise_address: str | None = None
    # The replica sandbox on this host ("auto": the strongest that runs here; "bwrap"; "none":
    # unsandboxed, which a server with several users otherwise refuses), and whether replicas
    # may reach the network (False: none but their link, whatever their nodepool says).
    sandbox: str = "auto"
    egress: bool = True
    # Host folders every replica may read (read-only), e.g. a shared cache of model weights.
    replica_mounts: list[Path] = field(default_factory=list)
    # Fair share: what each user's replicas may hold together (orchard/quotas.py; the
    # bootstrap user has no limits unless the quotas name it).
    quotas: Quotas = field(default_factory=Quotas)

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


def default_providers(settings: Settings) -> ProviderRegistry:
    """This host, with the sandbox of the settings, and the Ray clusters of the settings (the
    `ray` provider is always there, so that a `ray` compute cluster is refused with the reason
    and the fix). Raises SandboxUnavailable when ``--sandbox bwrap`` cannot run here."""
    sandbox = choose_sandbox(settings.sandbox)
    if sandbox.isolates:
        uids = ", each tenant's as a uid of its own" if sandbox.separate_uids else ""
        log.info("replicas run sandboxed (%s)%s", sandbox.name, uids)
    else:
        log.warning(
            "REPLICAS RUN UNSANDBOXED (--sandbox %s): model code can read this server's files "
            "and other replicas' processes; %s",
            settings.sandbox,
            "chosen by the operator"
            if settings.sandbox == "none"
            else "install bubblewrap; a server with several users starts no replica so",
        )
    local = LocalProvider(sandbox=sandbox, unsandboxed_ok=settings.sandbox == "none")
    return ProviderRegistry([local, RayProvider(settings.ray_clusters, settings.home)])


def build_router() -> Router:
    router = Router()
    modules = (
        users,
        apps,
        models,
        uploads,
        logs,
        cloud,
        compute_clusters,
        nodepools,
        deployments,
        runners,
        work,
        predictions,
    )
    for module in modules:
        router.include(module.router)
    return router


def bootstrap(store: Store, settings: Settings) -> str | None:
    """Create the first user and PAT; a generated PAT is written to a 0600 file under home.
    A bootstrap PAT its owner revoked is not made again (the log says so). Returns the path of
    the file when one was written."""
    with store.session() as session:
        done = user_service.ensure_bootstrap(
            session, settings.bootstrap_user, settings.bootstrap_pat
        )
    if done.revoked is not None:
        log.warning(
            "the bootstrap PAT (ORCHARD_BOOTSTRAP_PAT) was revoked by user %s on %s UTC and "
            "stays revoked; use another PAT of theirs, or set ORCHARD_BOOTSTRAP_PAT to a new "
            "token and restart to make a new one",
            done.revoked.user_id,
            done.revoked.revoked_at.isoformat(timespec="seconds"),
        )
    token = done.token
    if token is None:
        return None
    fd = os.open(settings.pat_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return str(settings.pat_file)


MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux


def ensure_default_cluster(session: Session, user_id: str, runtime: Runtime) -> None:
    """A cluster "local" with a nodepool "default" that is this whole host, for a user who
    has no compute cluster yet: deploying is then all a first-time user does."""
    exists = session.scalars(
        select(ComputeClusterRow.id).where(ComputeClusterRow.user_id == user_id).limit(1)
    ).first()
    if exists is not None or session.get(UserRow, user_id) is None:
        return
    provider = runtime.providers.get("local")
    if provider is None:
        return
    whole_host = max(
        (t for t in provider.instance_types("local") if not t.shape.num_accelerators),
        key=lambda t: t.shape.cpus,
    )
    cluster = cluster_service.create_compute_cluster(
        session,
        user_id,
        ComputeClusterSpec.model_validate(
            {
                "id": "local",
                "description": "This host (made by orchard serve)",
                "cloud_provider": {"id": "local"},
                "region": "local",
            }
        ),
        runtime.providers,
    )
    nodepool_service.create_nodepool(
        session,
        cluster,
        NodepoolSpec.model_validate(
            {
                "id": "default",
                "description": f"All of this host: {whole_host.description}",
                "instance_types": [{"id": whole_host.id}],
                "min_instances": 0,
                "max_instances": 1,
            }
        ),
        runtime.providers,
    )
    log.info("made compute cluster 'local' with nodepool 'default' for user %s", user_id)


class OrchardServer:
    """The gRPC server with its store. ``start`` binds and returns the port."""

    def __init__(self, settings: Settings, providers: ProviderRegistry | None = None) -> None:
        self.settings = settings
        database = None if settings.database_url else settings.home / "orchard.db"
        prepare_home(settings.home, database, [settings.pat_file])
        self.store = Store(settings.url)
        self.pat_file = bootstrap(self.store, settings)
        packages = PackageStore(settings.home / "packages")
        builder = EnvBuilder(
            BuildSettings(
                envs=settings.home / "envs",
                runtime=settings.home / "runtime",
                uv=uv.find_uv_bin(),
                find_links=settings.find_links,
                offline=settings.offline,
                python_fallback=settings.python_fallback,
            )
        )
        self.builds = BuildQueue(self.store, packages, builder)
        self.dispatcher = Dispatcher(DispatchSettings(hold_seconds=settings.hold_seconds))
        self.fetcher = UrlFetcher(
            FetchPolicy(
                max_bytes=settings.max_request_bytes,
                max_request_bytes=settings.max_request_bytes,
                allow_private=settings.allow_private_urls,
                allowed_hosts=tuple(settings.allowed_url_hosts),
            )
        )
        runtime = Runtime(
            providers=providers or default_providers(settings),
            packages=packages,
            builds=self.builds,
            dispatcher=self.dispatcher,
            fetcher=self.fetcher,
            metrics=Metrics(lambda: runtime.orchestrator.view if runtime.orchestrator else None),
            quotas=settings.quotas.with_operator(settings.bootstrap_user),
        )
        self.adapter = GrpcAdapter(build_router(), self.store, runtime)
        for provider in runtime.providers.all():
            provider.on_out_of_memory = self.dispatcher.out_of_memory
        self.runtime = runtime
        self.timeseries = TimeSeries(runtime.metrics.latency, self._view)
        self._http: HttpListener | None = None
        self.http_port = 0
        self.port = 0
        self.local_address: str | None = None
        self._grpc: grpc.aio.Server | None = None
        self._link: LinkServer | None = None

    async def start(self) -> int:
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self.settings.max_request_bytes),
                ("grpc.max_send_message_length", MAX_SEND_BYTES),
                ("grpc.so_reuseport", 0),
            ]
        )
        server.add_generic_rpc_handlers((self.adapter.generic_handler(),))
        self.port = server.add_insecure_port(f"{self.settings.host}:{self.settings.port}")
        if self.port == 0:
            raise OSError(
                f"cannot listen on {self.settings.host}:{self.settings.port}; "
                "is another server using the port? pick one with --port"
            )
        await server.start()
        self.local_address = await self._listen_locally()
        self._grpc = server
        for provider in self.runtime.providers.all():
            provider.start()
        await self.builds.resume()
        if self.settings.default_cluster:
            with self.store.session() as session:
                ensure_default_cluster(session, self.settings.bootstrap_user, self.runtime)
        if self.settings.orchestrate:
            self._start_orchestrator()
        if self.settings.http_port is not None:
            context = HttpContext(self.adapter, self.runtime, self.port, self.timeseries)
            self._http = HttpListener(
                build_app(context), self.settings.host, self.settings.http_port
            )
            self.http_port = await self._http.start()
        self.timeseries.start()
        return self.port

    def _view(self) -> LiveView | None:
        orchestrator = self.runtime.orchestrator
        return orchestrator.view if orchestrator is not None else None

    def _start_orchestrator(self) -> None:
        loopback = "127.0.0.1" if self.settings.host in ("0.0.0.0", "") else self.settings.host
        network = self.settings.advertise_address or f"{loopback}:{self.port}"
        orchestrator = Orchestrator(
            OrchestratorSettings(
                home=self.settings.home,
                server=self.local_address or network,
                network_server=network,
                find_links=tuple(str(p) for p in self.settings.find_links),
                offline=self.settings.offline,
                drain_grace=self.settings.drain_seconds,
                link_socket=self._link.path if self._link is not None else None,
                egress=self.settings.egress,
                mounts=tuple(self.settings.replica_mounts),
                quotas=self.runtime.quotas,
                max_message_bytes=self.settings.max_request_bytes,
            ),
            self.runtime.providers,
            self.dispatcher,
            StoreEdge(
                self.adapter.in_session,
                self.runtime.providers,
                self.runtime.packages,
                self.settings.home / "envs",
            ),
            self.runtime.replica_tokens,
        )
        self.runtime.orchestrator = orchestrator
        self.dispatcher.on_wait = orchestrator.wake
        orchestrator.start()

    async def _listen_locally(self) -> str | None:
        """The local link under home for this host's replicas (:mod:`orchard.runners.link`);
        None where the path is too long for a socket address."""
        path = self.settings.home / "run" / "runners.sock"
        if len(str(path)) > MAX_SOCKET_PATH:
            return None
        path.parent.mkdir(mode=0o700, exist_ok=True)
        # Replicas that run as their tenants' uids must be able to connect: the socket is
        # open to all, and only reachable through the 0700 folder or a sandbox's bind of it.
        local = self.runtime.providers.get("local")
        shared = isinstance(local, LocalProvider) and local.sandbox.separate_uids
        self._link = LinkServer(
            self.adapter,
            path,
            mode=0o666 if shared else 0o600,
            max_frame_bytes=self.settings.max_request_bytes,
        )
        await self._link.start()
        return self._link.address

    async def stop(self, grace: float = 5.0) -> None:
        """Stop the replicas this server started (each drains up to ``drain_seconds``), finish
        in-flight calls (up to ``grace`` seconds), then release everything."""
        await self.timeseries.stop()
        if self.runtime.orchestrator is not None:
            await self.runtime.orchestrator.close()
            self.runtime.orchestrator = None
        for provider in self.runtime.providers.all():
            await asyncio.to_thread(provider.close)
        if self._link is not None:
            await self._link.close()
            self._link = None
        if self._http is not None:
            await self._http.stop()
            self._http = None
        if self._grpc is not None:
            await self._grpc.stop(grace)
            self._grpc = None
        await self.builds.close()
        await self.fetcher.close()
        self.adapter.close()
        self.store.close()

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.port}"
