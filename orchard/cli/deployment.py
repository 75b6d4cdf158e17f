"""`orchard deployment` (`dp`): create, list, get, logs and delete deployments.

Deployments belong to the user, not to a nodepool: ``get`` and ``delete`` need only the
deployment id, and ``create`` uses its NODEPOOL_ID only when the config names no nodepools
(the nodepool's cluster is then looked up on the server).
"""

from __future__ import annotations

import time

import click

from orchard.cli import output
from orchard.cli.common import (
    CliState,
    config_option,
    id_options,
    paging_options,
    pass_state,
    pick_ids,
)
from orchard.cli.groups import AliasedGroup
from orchard.client import Nodepool

NP, DEP = "nodepool_id", "deployment_id"
LOG_TYPES = {"model": "runner", "events": "runner.events"}
RECENT_EVENTS = 10
FOLLOW_POLL_S = 1.0


@click.group("deployment", cls=AliasedGroup)
def deployment() -> None:
    """Manage deployments."""


@deployment.command("create", aliases=["c"])
@click.argument("nodepool_id", required=False)
@click.argument("deployment_id", required=False)
@config_option
@id_options(NP, DEP)
@pass_state
def create(
    state: CliState,
    nodepool_id: str | None,
    deployment_id: str | None,
    config_file: str,
    **flags: str | None,
) -> None:
    """Deploy into NODEPOOL_ID as DEPLOYMENT_ID from a config file (default id: the config's)."""
    ids = pick_ids([NP, DEP], [nodepool_id, deployment_id], flags, required=[NP])
    pool = state.client(Nodepool, str(ids[NP]))
    dep = pool.create_deployment(config_filepath=config_file, deployment_id=ids[DEP])
    output.say(f"Created deployment '{dep.id}'.")


@deployment.command("list", aliases=["ls"])
@click.argument("nodepool_id", required=False)
@id_options(NP)
@paging_options
@pass_state
def list_(
    state: CliState,
    nodepool_id: str | None,
    page_no: int | None,
    per_page: int | None,
    **flags: str | None,
) -> None:
    """List the deployments in NODEPOOL_ID (default: all of them)."""
    np_id = pick_ids([NP], [nodepool_id], flags)[NP]
    if np_id:
        found = state.client(Nodepool, np_id).list_deployments(page_no=page_no, per_page=per_page)
    else:
        found = state.user().list_deployments(page_no=page_no, per_page=per_page)
    output.table(
        output.DEPLOYMENT_COLUMNS,
        (output.deployment_row(dep.proto) for dep in found),
        empty="No deployments; create one with "
        "`orchard deployment create NODEPOOL_ID ID --config FILE`.",
    )


@deployment.command("get", aliases=["status"])
@click.argument("deployment_id", required=False)
@id_options(DEP)
@pass_state
def get(state: CliState, deployment_id: str | None, **flags: str | None) -> None:
    """Show DEPLOYMENT_ID as YAML; its replicas and recent events follow as YAML comments, so
    the output still loads as YAML."""
    dep_id = str(pick_ids([DEP], [deployment_id], flags, required=[DEP])[DEP])
    dep = state.user().deployment(dep_id)
    output.print_yaml("deployment", dep.proto)
    for pool in dep.proto.deployment_metrics.nodepool_metrics:
        click.echo(
            f"# replicas in {pool.compute_cluster_id}/{pool.nodepool_id}: "
            f"desired {pool.metrics.desired_replicas}, live {pool.metrics.live_replicas}"
        )
    events = dep.log_reader("runner.events").read()[-RECENT_EVENTS:]
    if events:
        click.echo("# recent events:")
        for event in events:
            for line in event.splitlines():
                click.echo(f"#   {line}")


@deployment.command("logs")
@click.argument("deployment_id")
@click.option(
    "--follow/--no-follow", default=True, show_default=True, help="Keep printing new lines."
)
@click.option("--duration", type=float, default=None, help="Stop following after N seconds.")
@click.option(
    "--log-type",
    type=click.Choice(["model", "events"], case_sensitive=False),
    default="model",
    show_default=True,
    help="model: what the replicas print; events: what the orchestrator did with them.",
)
@pass_state
def logs(
    state: CliState, deployment_id: str, follow: bool, duration: float | None, log_type: str
) -> None:
    """Print (and follow) the logs of DEPLOYMENT_ID's replicas."""
    reader = state.user().deployment(deployment_id).log_reader(LOG_TYPES[log_type.lower()])
    stop = time.monotonic() + duration if duration is not None else None
    try:
        while True:
            for line in reader.read():
                click.echo(line)
            if not follow or (stop is not None and time.monotonic() >= stop):
                return
            time.sleep(FOLLOW_POLL_S)
    except KeyboardInterrupt:
        return


@deployment.command("delete", aliases=["rm"])
@click.argument("deployment_id", required=False)
@id_options(NP, DEP)
@pass_state
def delete(state: CliState, deployment_id: str | None, **flags: str | None) -> None:
    """Delete DEPLOYMENT_ID (--nodepool_id is accepted for old scripts and not needed)."""
    dep_id = str(pick_ids([DEP], [deployment_id], flags, required=[DEP])[DEP])
    status = state.user().delete_deployments([dep_id])
    output.say_removed(f"Deleted deployment '{dep_id}'.", status)
