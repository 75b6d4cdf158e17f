"""`orchard model`: upload a model package and follow its build."""

from __future__ import annotations

from pathlib import Path

import click
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from orchard.cli import output
from orchard.cli.common import CliState, pass_state
from orchard.cli.groups import AliasedGroup
from orchard.client.uploads import upload_model


@click.group("model", cls=AliasedGroup)
def model() -> None:
    """Upload and inspect models."""


@model.command("upload")
@click.argument("model_path", default=".", type=click.Path(path_type=Path))
@click.option("--no-wait", is_flag=True, help="Return once uploaded; do not follow the build.")
@pass_state
def upload(state: CliState, model_path: Path, no_wait: bool) -> None:
    """Upload the package at MODEL_PATH (config.yaml, requirements.txt, 1/model.py) and
    follow its build log until the version is ready."""
    columns = ("{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=output.console(), transient=True) as bar:
        task = bar.add_task("uploading", total=None)
        version = upload_model(
            model_path,
            wait=not no_wait,
            context=state.context,
            config_path=state.config_path,
            on_progress=lambda sent, total: bar.update(task, completed=sent, total=total),
            on_log=lambda line: bar.console.print(line, markup=False),
        )
    verb = "Uploaded" if no_wait else "Built"
    output.say(f"{verb} version {version.id}; deploy it with `orchard deployment create`.")
