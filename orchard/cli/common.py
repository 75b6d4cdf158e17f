"""What the resource commands share: the CLI state (config file and context, one SDK client),
ids given as positional arguments or as the older flags, and the paging options."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click

from orchard.client import BaseClient, User

C = TypeVar("C", bound=BaseClient)
F = TypeVar("F", bound=Callable[..., Any])

# Each id a command may take: (its flag names, what to call it in messages).
ID_FLAGS: dict[str, tuple[tuple[str, str], str]] = {
    "compute_cluster_id": (("--compute_cluster_id", "-cc_id"), "compute cluster id"),
    "nodepool_id": (("--nodepool_id", "-np_id"), "nodepool id"),
    "deployment_id": (("--deployment_id", "-dpl_id"), "deployment id"),
}


@dataclass
class CliState:
    """Global options of the top group, and the SDK clients built from them."""

    config_path: str | None = None
    context: str | None = None
    _clients: list[BaseClient] = field(default_factory=list)

    def client(self, cls: type[C], *args: Any, **kwargs: Any) -> C:
        """An SDK client using this invocation's config file and context."""
        made = cls(*args, context=self.context, config_path=self.config_path, **kwargs)
        self._clients.append(made)
        return made

    def user(self) -> User:
        return self.client(User)

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()


pass_state = click.make_pass_decorator(CliState, ensure=True)


def id_options(*names: str) -> Callable[[F], F]:
    """The older flag forms (``--compute_cluster_id/-cc_id`` ...) for the ids ``names``."""

    def decorate(fn: F) -> F:
        for name in reversed(names):
            flags, label = ID_FLAGS[name]
            fn = click.option(*flags, f"{name}_flag", metavar="ID", help=f"The {label}.")(fn)
        return fn

    return decorate


def pick_ids(
    names: Sequence[str],
    positional: Sequence[str | None],
    flags: dict[str, str | None],
    required: Sequence[str] = (),
) -> dict[str, str | None]:
    """Assign ids given as flags to their names and positional ids, in order, to the rest."""
    ids: dict[str, str | None] = {name: flags.get(f"{name}_flag") for name in names}
    free = [name for name in names if not ids[name]]
    given = [value for value in positional if value]
    if len(given) > len(free):
        raise click.UsageError(f"too many ids: {' '.join(given)}")
    ids.update(zip(free, given, strict=False))
    for name in required:
        if not ids.get(name):
            flag_names, label = ID_FLAGS[name]
            raise click.UsageError(
                f"missing {label}: give it as an argument or with {'/'.join(flag_names)}"
            )
    return ids


def paging_options(fn: F) -> F:
    fn = click.option(
        "--per_page",
        "--per-page",
        "per_page",
        type=click.IntRange(min=1),
        default=None,
        help="Items per page (with --page_no: one page; default: all pages).",
    )(fn)
    return click.option(
        "--page_no",
        "--page-no",
        "page_no",
        type=click.IntRange(min=1),
        default=None,
        help="Show only this page (1-based).",
    )(fn)


def config_option(fn: F) -> F:
    return click.option(
        "--config",
        "config_file",
        required=True,
        metavar="PATH",
        help="The resource's YAML config file.",
    )(fn)


def build_options(fn: F) -> F:
    """--find-links, --offline and --python-fallback: how model environments are built."""
    options = [
        click.option(
            "--find-links",
            "find_links",
            multiple=True,
            envvar="ORCHARD_FIND_LINKS",
            type=click.Path(path_type=Path, exists=True, file_okay=False),
            help="A folder of wheels environments may install from (repeatable).",
        ),
        click.option(
            "--offline",
            is_flag=True,
            envvar="ORCHARD_OFFLINE",
            help="Build environments from --find-links and uv's cache only (no index).",
        ),
        click.option(
            "--python-fallback/--no-python-fallback",
            default=True,
            show_default=True,
            help="Build with this Python when build_info.python_version is not installed.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn
