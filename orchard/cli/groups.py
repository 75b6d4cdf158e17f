"""Click groups: commands with aliases (``orchard cc ls``), and the top group's error policy.

Every failure of the CLI ends the same way: one line ``Error: ...`` on stderr and exit code 1,
whether it is an :class:`OrchardError` from the SDK, a usage mistake or an interrupted prompt.
Set ``ORCHARD_DEBUG=1`` to get the traceback of an unexpected exception instead.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import click

from orchard.errors import OrchardError

DEBUG_ENV = "ORCHARD_DEBUG"


class AliasedGroup(click.Group):
    """A group whose commands may also be called by short aliases."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.aliases: dict[str, str] = {}  # alias -> command name
        self.lazy: dict[str, str] = {}  # command name -> "module:attribute", imported on use

    def add_alias(self, name: str, *aliases: str) -> None:
        for alias in aliases:
            self.aliases[alias] = name

    def add_command(
        self, cmd: click.Command, name: str | None = None, aliases: Sequence[str] = ()
    ) -> None:
        super().add_command(cmd, name)
        self.add_alias(name or cmd.name or "", *aliases)

    def command(self, *args: Any, aliases: Sequence[str] = (), **kwargs: Any) -> Any:
        """``@group.command("list", aliases=["ls"])``."""
        decorator = super().command(*args, **kwargs)

        def register(fn: Callable[..., Any]) -> click.Command:
            cmd: click.Command = decorator(fn)
            self.add_alias(cmd.name or "", *aliases)
            return cmd

        return register

    def add_lazy_command(self, name: str, target: str) -> None:
        """Register ``module:attribute`` as command ``name``, imported only when used (for
        commands with heavy imports). A module that does not exist leaves the command out."""
        self.lazy[name] = target

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        name = self.aliases.get(cmd_name, cmd_name)
        if name not in self.commands and name in self.lazy:
            loaded = _import(self.lazy[name])
            if loaded is None:
                return None
            self.add_command(loaded, name)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is None or cmd.hidden:
                continue
            aliases = sorted(a for a, target in self.aliases.items() if target == name)
            label = name + (f" ({', '.join(aliases)})" if aliases else "")
            rows.append((label, cmd.get_short_help_str(formatter.width - 6 - len(label))))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class OrchardGroup(AliasedGroup):
    """The top group: runs the CLI and turns every failure into ``Error: ...`` and exit 1."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help())
            result = 0
        except click.UsageError as exc:
            hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
            fail(exc.format_message() + hint)
        except click.ClickException as exc:
            fail(exc.format_message())
        except click.Abort:
            fail("aborted")
        except OrchardError as exc:
            fail(str(exc))
        except OSError as exc:  # a config file that cannot be written, a closed pipe
            fail(str(exc))
        except Exception as exc:
            if os.environ.get(DEBUG_ENV):
                raise
            fail(f"unexpected {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 for a traceback)")
        if not standalone_mode:
            return result
        sys.exit(result if isinstance(result, int) else 0)


def _import(target: str) -> click.Command | None:
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        return None
    command: click.Command = getattr(module, attribute)
    return command


def fail(message: str) -> NoReturn:
    click.echo(f"Error: {' '.join(message.split())}", err=True)
    sys.exit(1)
