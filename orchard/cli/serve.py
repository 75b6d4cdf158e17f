"""`orchard serve`: run the API server until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import yaml

from orchard import errors
from orchard.cli.common import build_options
from orchard.providers.ray import cluster_option, clusters_file
from orchard.providers.sandbox import SandboxUnavailable
from orchard.quantities import format_bytes, parse_quantity
from orchard.quotas import RESOURCES, Quotas, quotas_from
from orchard.server.app import DEFAULT_MAX_REQUEST_BYTES, DEFAULT_PORT, OrchardServer, Settings

F = TypeVar("F", bound=Callable[..., Any])


async def _serve(settings: Settings) -> None:
    try:
        server = OrchardServer(settings)
    except SandboxUnavailable as exc:
        raise click.ClickException(f"--sandbox {settings.sandbox}: {exc}") from None
    port = await server.start()
    base = f"http://{settings.host}:{port}"
    click.echo(f"Orchard listening on {settings.host}:{port} (state in {settings.home})", err=True)
    if settings.http_port is not None:
        http = f"http://{settings.host}:{server.http_port}"
        click.echo(f"HTTP (REST, OpenAI, dashboard, /metrics) at {http}/", err=True)
    if server.pat_file:
        click.echo(
            f"Created user '{settings.bootstrap_user}'; its PAT is in {server.pat_file}.\n"
            f"Log in with: orchard login {base} --pat $(cat {server.pat_file})",
            err=True,
        )
    else:
        click.echo(f"Log in with: orchard login {base} --pat <PAT>", err=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    click.echo("Orchard shutting down...", err=True)
    await server.stop()


# -- fair share: the quota options, handed to the command as one `quotas` argument -----------


def quota_options(fn: F) -> F:
    """--quota-replicas/-cpus/-memory/-gpus (every user's default) and --quotas FILE (a default
    and per-user entries; orchard/quotas.py has the rules), as one ``quotas`` argument of the
    command, checked before the server starts. The user the server makes has no limits unless
    the file names it."""
    options = [
        click.option(
            "--quota-replicas",
            type=click.IntRange(min=0),
            metavar="N",
            help="The most replicas one user may run, over all its deployments.",
        ),
        click.option(
            "--quota-cpus", metavar="QUANTITY", callback=_quantity, help=_MOST % "CPUs (8, 500m)"
        ),
        click.option(
            "--quota-memory", metavar="QUANTITY", callback=_quantity, help=_MOST % "memory (64Gi)"
        ),
        click.option("--quota-gpus", type=click.IntRange(min=0), metavar="N", help=_MOST % "GPUs"),
        click.option(
            "--quotas",
            "quotas_file",
            type=click.Path(path_type=Path, exists=True, dir_okay=False),
            help="A YAML file of quotas: default: {replicas, cpus, memory, gpus} and users: "
            "{USER: {...}} (a user's fields replace the default's; null lifts a limit). The "
            "user the server makes (admin) has no limits unless the file names it.",
        ),
    ]

    @functools.wraps(fn)
    def command(*args: Any, quotas_file: Path | None, **kwargs: Any) -> Any:
        given = {name: kwargs.pop(f"quota_{name}") for name in RESOURCES}
        return fn(*args, quotas=_quotas(quotas_file, given), **kwargs)

    for option in reversed(options):
        command = option(command)
    return command  # type: ignore[return-value]


_MOST = "The most %s one user's replicas may hold together."


def _quantity(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        try:
            parse_quantity(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


def _byte_size(ctx: click.Context, param: click.Parameter, value: str) -> int:
    """A positive whole number of bytes from a quantity ("64Mi", "1Gi", "1000000")."""
    try:
        size = parse_quantity(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if size < 1 or size != int(size) or size >= 1 << 31:
        raise click.BadParameter(f"{value!r} must be a whole number of bytes from 1 to 2Gi - 1")
    return int(size)


def _quotas(path: Path | None, given: dict[str, Any]) -> Quotas:
    try:
        data = yaml.safe_load(path.read_text()) if path is not None else None
        return quotas_from(data, given)
    except (OSError, yaml.YAMLError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint="--quotas") from None
    except errors.OrchardError as exc:
        raise click.BadParameter(f"{path}: {exc.message}", param_hint="--quotas") from None


@click.command()
@click.option(
    "--home",
    type=click.Path(path_type=Path),
    default=None,
    help="State directory (database, PAT file). Default: ~/.orchard",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=int,
    default=DEFAULT_PORT,
    show_default=True,
    help="Port to listen on (0 picks a free one).",
)
@click.option(
    "--database-url",
    default=None,
    envvar="ORCHARD_DATABASE_URL",
    help="SQLAlchemy URL, e.g. postgresql://user@host/db. Default: SQLite under home.",
)
@build_options
@click.option(
    "--allow-private-urls",
    is_flag=True,
    help="Let URL inputs reach private, loopback and link-local addresses (off: refused).",
)
@click.option(
    "--allow-url-host",
    "allowed_url_hosts",
    multiple=True,
    help="A host or host:port URL inputs may reach even when private (repeatable).",
)
@click.option(
    "--max-request-bytes",
    default=format_bytes(DEFAULT_MAX_REQUEST_BYTES),
    show_default=True,
    metavar="QUANTITY",
    callback=_byte_size,
    help="The largest request (and message) the server accepts, URL inputs fetched included; "
    "a larger one is refused naming this limit.",
)
@click.option(
    "--orchestrate/--no-orchestrate",
    default=True,
    show_default=True,
    help="Start, scale and stop deployments' replicas (off: attach them with `orchard runner`).",
)
@click.option(
    "--hold-seconds",
    type=float,
    default=30.0,
    show_default=True,
    help="How long a prediction waits for a replica before MODEL_DEPLOYING.",
)
@click.option(
    "--http-port",
    "--metrics-port",
    "http_port",
    type=int,
    default=None,
    help="Port of the HTTP listener: REST/JSON, the OpenAI-compatible API, /metrics and the "
    "dashboard (default: --port + 1, or a free port when --port is 0; -1: no listener). "
    "--metrics-port is an alias.",
)
@click.option(
    "--ray-cluster",
    "ray_clusters",
    multiple=True,
    metavar="NAME=ADDRESS",
    help="A Ray cluster compute clusters of provider `ray` may name as their region, e.g. "
    "prod=ray://10.0.0.5:10001 (repeatable).",
)
@click.option(
    "--ray-config",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="A YAML file of Ray clusters (clusters: {NAME: {address, auth_token_file, "
    "namespace}}), for clusters that need a token.",
)
@click.option(
    "--advertise-address",
    default=None,
    metavar="HOST:PORT",
    help="Where runner replicas on other machines (Ray nodes) reach this server. Default: "
    "--host:--port (loopback when --host is 0.0.0.0).",
)
@click.option(
    "--sandbox",
    type=click.Choice(["auto", "bwrap", "none"]),
    default="auto",
    show_default=True,
    help="How replicas of untrusted model code are isolated on this host: bwrap (bubblewrap: "
    "own PID namespace and filesystem view, tenants' own uids when run as root), auto (bwrap "
    "where it runs), none (unsandboxed; a server with several users then needs it said).",
)
@click.option(
    "--egress",
    type=click.Choice(["default", "none"]),
    default="default",
    show_default=True,
    help="Whether replicas may reach the network (none: only their link to this server); a "
    "nodepool can also deny it with metadata egress: none.",
)
@click.option(
    "--replica-mount",
    "replica_mounts",
    multiple=True,
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="A host folder every replica may read, read-only, at the same path (e.g. a shared "
    "cache of model weights; repeatable). Nothing else of the host's files is visible to them.",
)
@quota_options
@click.option("--log-level", default="INFO", show_default=True)
def serve(
    home: Path | None,
    host: str,
    port: int,
    database_url: str | None,
    find_links: tuple[Path, ...],
    offline: bool,
    python_fallback: bool,
    allow_private_urls: bool,
    allowed_url_hosts: tuple[str, ...],
    max_request_bytes: int,
    orchestrate: bool,
    hold_seconds: float,
    http_port: int | None,
    ray_clusters: tuple[str, ...],
    ray_config: Path | None,
    advertise_address: str | None,
    sandbox: str,
    egress: str,
    replica_mounts: tuple[Path, ...],
    quotas: Quotas,
    log_level: str,
) -> None:
    """Run the Orchard API server."""
    try:
        clusters = [cluster_option(text) for text in ray_clusters]
        clusters += clusters_file(ray_config) if ray_config is not None else []
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    settings = Settings.from_env(
        home=home,
        host=host,
        port=port,
        database_url=database_url,
        find_links=[path.resolve() for path in find_links],
        offline=offline,
        python_fallback=python_fallback,
        allow_private_urls=allow_private_urls,
        allowed_url_hosts=list(allowed_url_hosts),
        max_request_bytes=max_request_bytes,
        orchestrate=orchestrate,
        hold_seconds=hold_seconds,
        ray_clusters=clusters,
        advertise_address=advertise_address,
        sandbox=sandbox,
        egress=egress != "none",
        replica_mounts=[path.resolve() for path in replica_mounts],
        quotas=quotas,
    )
    if http_port is None:
        http_port = port + 1 if port else 0
    settings.http_port = http_port if http_port >= 0 else None
    asyncio.run(_serve(settings))
