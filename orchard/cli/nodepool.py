"""`orchard nodepool` (`np`): create, list, get and delete nodepools."""

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

CC, NP = "compute_cluster_id", "nodepool_id"


@click.group("nodepool", cls=AliasedGroup)
def nodepool() -> None:
    """Manage nodepools."""


@nodepool.command("create", aliases=["c"])
@click.argument("compute_cluster_id", required=False)
@click.argument("nodepool_id", required=False)
@config_option
@id_options(CC, NP)
@pass_state
def create(
    state: CliState,
    compute_cluster_id: str | None,
    nodepool_id: str | None,
    config_file: str,
    **flags: str | None,
) -> None:
    """Create NODEPOOL_ID in COMPUTE_CLUSTER_ID from a config file (default id: the config's)."""
    ids = pick_ids([CC, NP], [compute_cluster_id, nodepool_id], flags, required=[CC])
    cluster = state.user().compute_cluster(str(ids[CC]))
    np = cluster.create_nodepool(config_filepath=config_file, nodepool_id=ids[NP])
    output.say(f"Created nodepool '{np.id}' in compute cluster '{cluster.id}'.")


@nodepool.command("list", aliases=["ls"])
@click.argument("compute_cluster_id", required=False)
@id_options(CC)
@paging_options
@pass_state
def list_(
    state: CliState,
    compute_cluster_id: str | None,
    page_no: int | None,
    per_page: int | None,
    **flags: str | None,
) -> None:
    """List the nodepools of COMPUTE_CLUSTER_ID (default: of every cluster)."""
    cc_id = pick_ids([CC], [compute_cluster_id], flags)[CC]
    user = state.user()
    source = user.compute_cluster(cc_id).list_nodepools if cc_id else user.list_nodepools
    output.table(
        output.NODEPOOL_COLUMNS,
        (output.nodepool_row(np.proto) for np in source(page_no=page_no, per_page=per_page)),
        empty="No nodepools; create one with "
        "`orchard nodepool create CLUSTER_ID ID --config FILE`.",
    )


@nodepool.command("get")
@click.argument("compute_cluster_id", required=False)
@click.argument("nodepool_id", required=False)
@id_options(CC, NP)
@pass_state
def get(
    state: CliState, compute_cluster_id: str | None, nodepool_id: str | None, **flags: str | None
) -> None:
    """Show NODEPOOL_ID of COMPUTE_CLUSTER_ID as YAML."""
    ids = pick_ids([CC, NP], [compute_cluster_id, nodepool_id], flags, required=[CC, NP])
    cluster = state.user().compute_cluster(str(ids[CC]))
    output.print_yaml("nodepool", cluster.nodepool(str(ids[NP])).proto)


@nodepool.command("delete", aliases=["rm"])
@click.argument("compute_cluster_id", required=False)
@click.argument("nodepool_id", required=False)
@id_options(CC, NP)
@pass_state
def delete(
    state: CliState, compute_cluster_id: str | None, nodepool_id: str | None, **flags: str | None
) -> None:
    """Delete NODEPOOL_ID of COMPUTE_CLUSTER_ID (its deployments lose that placement)."""
    ids = pick_ids([CC, NP], [compute_cluster_id, nodepool_id], flags, required=[CC, NP])
    cluster = state.user().compute_cluster(str(ids[CC]))
    status = cluster.delete_nodepools([str(ids[NP])])
    output.say_removed(f"Deleted nodepool '{ids[NP]}' of compute cluster '{ids[CC]}'.", status)
