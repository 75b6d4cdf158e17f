"""`orchard pat`: create, list and delete personal access tokens (the API's keys)."""

from __future__ import annotations

import click

from orchard.cli import output
from orchard.cli.common import CliState, pass_state
from orchard.cli.groups import AliasedGroup


@click.group("pat", cls=AliasedGroup)
def pat() -> None:
    """Manage personal access tokens."""


@pat.command("create", aliases=["c"])
@click.option("--description", default="", help="What the token is for.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the token.")
@pass_state
def create(state: CliState, description: str, quiet: bool) -> None:
    """Create a PAT. The token is shown only this once."""
    key = state.user().create_pat(description=description)
    output.say(key.id if quiet else f"Created PAT (shown once; store it now): {key.id}")


@pat.command("list", aliases=["ls"])
@pass_state
def list_(state: CliState) -> None:
    """List your PATs (their ids, never the secrets)."""
    output.table(
        ("ID", "DESCRIPTION", "CREATED"),
        ([key.id, key.description, output.when(key)] for key in state.user().list_pats()),
        empty="No PATs; create one with `orchard pat create`.",
    )


@pat.command("delete", aliases=["rm"])
@click.argument("pat_id")
@pass_state
def delete(state: CliState, pat_id: str) -> None:
    """Delete the PAT PAT_ID (as shown by `orchard pat list`)."""
    status = state.user().delete_pat(pat_id)
    output.say_removed(f"Deleted PAT '{pat_id}'.", status)
