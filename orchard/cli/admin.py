"""`orchard user create`: an administrator's command run where the server's state lives.

Users have no API of their own in the protocol, so this opens the store directly (like a
database's createuser). Everything else in the CLI goes through the SDK.
"""

from __future__ import annotations

from pathlib import Path

import click

from orchard.errors import OrchardError
from orchard.server.app import Settings
from orchard.services import users
from orchard.store import Store


@click.group()
def user() -> None:
    """Manage users (run on the server's machine)."""


@user.command("create")
@click.argument("user_id")
@click.option(
    "--home",
    type=click.Path(path_type=Path),
    default=None,
    help="The server's state directory. Default: ~/.orchard",
)
@click.option(
    "--database-url",
    default=None,
    envvar="ORCHARD_DATABASE_URL",
    help="The server's database URL, when not SQLite under home.",
)
def create(user_id: str, home: Path | None, database_url: str | None) -> None:
    """Create USER_ID and print a PAT for them (shown once)."""
    settings = Settings.from_env(home=home, database_url=database_url)
    if settings.database_url is None and not (settings.home / "orchard.db").exists():
        raise click.ClickException(
            f"no Orchard state in {settings.home}; start `orchard serve` once or pass --home"
        )
    store = Store(settings.url)
    try:
        with store.session() as session:
            users.create_user(session, user_id)
            _, token = users.create_pat(session, user_id, description="created by orchard user")
    except OrchardError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()
    click.echo(f"Created user '{user_id}'. PAT (shown once): {token}")
