"""`orchard login`: check a PAT against a server and save it as a context of the config file."""

from __future__ import annotations

import os

import click

from orchard.cli import output
from orchard.cli.common import CliState, pass_state
from orchard.client import User, contexts
from orchard.client.base import DEFAULT_BASE_URL, ENV_NAMES


def default_base_url() -> str:
    for name in ENV_NAMES["base_url"]:
        if os.environ.get(name):
            return os.environ[name]
    return DEFAULT_BASE_URL


@click.command()
@click.argument("base_url", required=False)
@click.option("--pat", prompt="PAT", hide_input=True, help="The personal access token.")
@click.option("--user-id", "--user_id", default=None, help="Default: the owner of the PAT.")
@click.option("--context", "context_name", default=None, help="Context name. Default: the user id.")
@pass_state
def login(
    state: CliState,
    base_url: str | None,
    pat: str,
    user_id: str | None,
    context_name: str | None,
) -> None:
    """Log in to the Orchard server at BASE_URL (default: ORCHARD_API_BASE or
    http://127.0.0.1:7600) and make it the current context."""
    base_url = base_url or default_base_url()
    # Every setting is explicit ("me" asks the server who owns the PAT), so nothing is taken
    # from the environment or from the config file being written.
    with User(user_id=user_id or "me", base_url=base_url, pat=pat) as user:
        verified = user.get_user_info().id
    name = context_name or verified
    cfg = contexts.read_config(state.config_path)
    cfg.contexts[name] = contexts.Context(base_url=base_url, pat=pat, user_id=verified)
    cfg.current_context = name
    contexts.write_config(cfg)
    output.say(f"Logged in to {base_url} as '{verified}'; context '{name}' is now current.")
