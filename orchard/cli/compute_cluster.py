"""`orchard computecluster` (`cc`): create, list, get and delete compute clusters."""

from __future__ import annotations

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

CC = "compute_cluster_id"


@click.group("computecluster", cls=AliasedGroup)
def computecluster() -> None:
    """Manage compute clusters."""


@computecluster.command("create", aliases=["c"])
@click.argument("compute_cluster_id", required=False)
@config_option
@id_options(CC)
@pass_state
def create(
    state: CliState, compute_cluster_id: str | None, config_file: str, **flags: str | None
) -> None:
    """Create COMPUTE_CLUSTER_ID from a config file (default id: the config's)."""
    ids = pick_ids([CC], [compute_cluster_id], flags)
    cc = state.user().create_compute_cluster(
        config_filepath=config_file, compute_cluster_id=ids[CC]
    )
    output.say(f"Created compute cluster '{cc.id}'.")


@computecluster.command("list", aliases=["ls"])
@paging_options
@pass_state
def list_(state: CliState, page_no: int | None, per_page: int | None) -> None:
    """List compute clusters."""
    clusters = state.user().list_compute_clusters(page_no=page_no, per_page=per_page)
    output.table(
        output.CLUSTER_COLUMNS,
        (output.cluster_row(cc.proto) for cc in clusters),
        empty="No compute clusters; create one with "
        "`orchard computecluster create ID --config FILE`.",
    )


@computecluster.command("get")
@click.argument("compute_cluster_id", required=False)
@id_options(CC)
@pass_state
def get(state: CliState, compute_cluster_id: str | None, **flags: str | None) -> None:
    """Show COMPUTE_CLUSTER_ID as YAML."""
    ids = pick_ids([CC], [compute_cluster_id], flags, required=[CC])
    output.print_yaml("compute_cluster", state.user().compute_cluster(str(ids[CC])).proto)


@computecluster.command("delete", aliases=["rm"])
@click.argument("compute_cluster_id", required=False)
@id_options(CC)
@pass_state
def delete(state: CliState, compute_cluster_id: str | None, **flags: str | None) -> None:
    """Delete COMPUTE_CLUSTER_ID with its nodepools and their deployments' placements."""
    cc_id = str(pick_ids([CC], [compute_cluster_id], flags, required=[CC])[CC])
    status = state.user().delete_compute_clusters([cc_id])
    output.say_removed(f"Deleted compute cluster '{cc_id}'.", status)
