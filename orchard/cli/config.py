"""`orchard config`: the contexts of the CLI config file.

The file (``--config PATH``, env ``ORCHARD_CONFIG``, default ``~/.config/orchard/config``) is
YAML, mode 0600::

    current_context: local
    contexts:
      local:
        base_url: http://127.0.0.1:7600
        pat: 0123456789abcdef
        user_id: alice

The SDK reads the same file (``orchard.client.contexts``) for any setting given neither as an
argument nor in the environment. ``orchard login`` writes a context and makes it current.
"""

from __future__ import annotations

import click

from orchard import errors
from orchard.cli import output
from orchard.cli.common import CliState, pass_state
from orchard.cli.groups import AliasedGroup
from orchard.client import contexts
from orchard.client.base import DEFAULT_BASE_URL
from orchard.client.channels import parse_base_url


@click.group("config", cls=AliasedGroup)
def config() -> None:
    """Manage contexts (base URL, PAT, user) in the CLI config file."""


def existing_config(state: CliState) -> contexts.ConfigFile:
    """The config file, which must exist."""
    cfg = contexts.read_config(state.config_path)
    if not cfg.exists:
        raise errors.UserError(
            f"no config file at {cfg.path}; create one with `orchard login BASE_URL --pat PAT` "
            "or `orchard config create-context NAME --pat PAT`"
        )
    return cfg


def mask(secret: str) -> str:
    return f"****{secret[-4:]}" if len(secret) > 8 else "****"


@config.command("get-contexts", aliases=["ls", "list-contexts"])
@pass_state
def get_contexts(state: CliState) -> None:
    """List the contexts; * marks the current one."""
    cfg = existing_config(state)
    rows = [
        ["*" if name == cfg.current_context else "", name, ctx.base_url, ctx.user_id]
        for name, ctx in sorted(cfg.contexts.items())
    ]
    output.table(
        ("CURRENT", "NAME", "BASE URL", "USER"),
        rows,
        empty=f"No contexts in {cfg.path}; add one with `orchard login`.",
    )


@config.command("use-context", aliases=["use"])
@click.argument("name")
@pass_state
def use_context(state: CliState, name: str) -> None:
    """Make NAME the current context."""
    cfg = existing_config(state)
    cfg.context(name)  # a missing one is an error that lists the known ones
    cfg.current_context = name
    contexts.write_config(cfg)
    output.say(f"Switched to context '{name}'.")


@config.command("current-context", aliases=["current"])
@pass_state
def current_context(state: CliState) -> None:
    """Print the name of the current context."""
    cfg = existing_config(state)
    cfg.context()  # an unset or dangling current context is an error that says what to do
    output.say(cfg.current_context)


@config.command("create-context", aliases=["create"])
@click.argument("name")
@click.option("--base-url", "--base_url", default=DEFAULT_BASE_URL, show_default=True)
@click.option("--pat", prompt="PAT", hide_input=True, help="The personal access token.")
@click.option("--user-id", "--user_id", default="", help="Default: the owner of the PAT.")
@pass_state
def create_context(state: CliState, name: str, base_url: str, pat: str, user_id: str) -> None:
    """Add context NAME (without checking it with the server; `orchard login` does)."""
    parse_base_url(base_url)
    cfg = contexts.read_config(state.config_path)
    if name in cfg.contexts:
        raise errors.UserError(
            f"context {name!r} already exists in {cfg.path}; delete it first with "
            f"`orchard config delete-context {name}` or pick another name"
        )
    cfg.contexts[name] = contexts.Context(base_url=base_url, pat=pat, user_id=user_id)
    first = not cfg.current_context
    if first:
        cfg.current_context = name
    contexts.write_config(cfg)
    output.say(f"Created context '{name}'" + (" (now current)." if first else "."))


@config.command("delete-context", aliases=["delete", "rm"])
@click.argument("name")
@pass_state
def delete_context(state: CliState, name: str) -> None:
    """Remove context NAME."""
    cfg = existing_config(state)
    cfg.context(name)
    del cfg.contexts[name]
    if cfg.current_context == name:
        cfg.current_context = ""
    contexts.write_config(cfg)
    output.say(f"Deleted context '{name}'.")


@config.command("view", aliases=["show"])
@click.option("--show-secrets", is_flag=True, help="Print PATs in full.")
@pass_state
def view(state: CliState, show_secrets: bool) -> None:
    """Print the config file (PATs masked)."""
    cfg = existing_config(state)
    data = cfg.to_dict()
    if not show_secrets:
        for ctx in data["contexts"].values():
            if ctx.get("pat"):
                ctx["pat"] = mask(ctx["pat"])
    click.echo(f"# {cfg.path}")
    output.print_dict(data)
