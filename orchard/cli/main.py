"""The ``orchard`` command: global options and the command tree.

    orchard [--config PATH] [--context NAME] COMMAND ...

``--config`` is the CLI config file (env ORCHARD_CONFIG; default ~/.config/orchard/config, see
``orchard.cli.config``); ``--context`` picks one of its contexts instead of the current one.
"""

from __future__ import annotations

from importlib import metadata

import click

from orchard.cli.common import CliState
from orchard.cli.compute_cluster import computecluster
from orchard.cli.config import config
from orchard.cli.deployment import deployment
from orchard.cli.groups import OrchardGroup
from orchard.cli.instances import list_instances
from orchard.cli.login import login
from orchard.cli.model import model
from orchard.cli.model_serve import model_serve
from orchard.cli.nodepool import nodepool
from orchard.cli.pat import pat
from orchard.cli.runner import runner


def _version() -> str:
    try:
        return metadata.version("orchard")
    except metadata.PackageNotFoundError:
        return "unknown"


@click.group(
    cls=OrchardGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
)
@click.option(
    "--config",
    "config_path",
    envvar="ORCHARD_CONFIG",
    metavar="PATH",
    help="The CLI config file. Default: ~/.config/orchard/config (env ORCHARD_CONFIG).",
)
@click.option("--context", metavar="NAME", help="Use this context instead of the current one.")
@click.version_option(_version(), "--version", prog_name="orchard")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, context: str | None) -> None:
    """Orchard: self-hosted compute orchestration for ML inference."""
    state = CliState(config_path=config_path, context=context)
    ctx.obj = state
    ctx.call_on_close(state.close)


cli.add_command(computecluster, aliases=["cc"])
cli.add_command(nodepool, aliases=["np"])
cli.add_command(deployment, aliases=["dp"])
cli.add_command(config)
cli.add_command(login)
cli.add_command(pat)
cli.add_command(model)
model.add_command(model_serve, aliases=["local-runner"])
cli.add_command(runner)
cli.add_command(list_instances, aliases=["li"])


# Written with the server; imported only when used, since they load the whole server.
cli.add_lazy_command("serve", "orchard.cli.serve:serve")
cli.add_lazy_command("user", "orchard.cli.admin:user")


def main() -> None:
    cli()
