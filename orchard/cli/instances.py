"""`orchard list-instances` (`li`): what a provider offers, to write nodepool configs with."""

from __future__ import annotations

import click

from orchard.cli import output
from orchard.cli.common import CliState, pass_state

COLUMNS = (
    "PROVIDER",
    "REGION",
    "ID",
    "CPU",
    "MEMORY",
    "GPUS",
    "GPU TYPE",
    "GPU MEMORY",
    "DESCRIPTION",
)


@click.command("list-instances")
@click.option("--cloud", default=None, help="Provider id (default: every provider).")
@click.option("--region", default=None, help="Region (default: the provider's first).")
@pass_state
def list_instances(state: CliState, cloud: str | None, region: str | None) -> None:
    """List instance types by provider and region."""
    user = state.user()
    providers = [cloud] if cloud else [p.id for p in user.list_cloud_providers()]
    rows = []
    for provider in providers:
        for area in [region] if region else user.list_cloud_regions(provider)[:1]:
            for item in user.list_instance_types(provider, area):
                info = item.compute_info
                rows.append(
                    [
                        provider,
                        area,
                        item.id,
                        info.cpu_limit,
                        info.cpu_memory,
                        str(info.num_accelerators or ""),
                        ",".join(info.accelerator_type),
                        info.accelerator_memory,
                        item.description,
                    ]
                )
    output.table(COLUMNS, rows, empty="No instance types.")
