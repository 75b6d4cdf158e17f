"""`orchard model`: upload a model package and follow its build; show its method signatures;
test it locally in its own environment."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from clarifai_grpc.grpc.api import resources_pb2
from google.protobuf import json_format
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from orchard import errors
from orchard.cli import output
from orchard.cli.common import CliState, pass_state
from orchard.cli.groups import AliasedGroup
from orchard.client.uploads import upload_model
from orchard.packaging import localtest
from orchard.packaging.inspect import run_inspection
from orchard.packaging.package import load_package
from orchard.runners.utils.serializers import type_name
from orchard.services.builds import BuildSettings

STR = resources_pb2.ModelTypeField.DataType.STR


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


# -- signatures ---------------------------------------------------------------------------------


@model.command("signatures")
@click.argument("model_path", default=".", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the raw signatures as JSON.")
def show_signatures(model_path: Path, as_json: bool) -> None:
    """Show a package's methods, parameters and returns.

    Loads 1/model.py of the package at MODEL_PATH here, with the imports that are not
    installed stubbed, and prints each method's call shape, parameters (types and defaults)
    and return type."""
    package = load_package(model_path)
    found = run_inspection(sys.executable, package.root, stub_missing=True)
    if found is None:
        raise errors.ModelInvalid(
            f"{package.model_file} subclasses the official clarifai SDK's ModelClass, whose "
            "signatures its own uploader computes (`clarifai model upload`); write the model "
            "with `from orchard.authoring import ModelClass` to see them here"
        )
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    rows = [_signature_row(_parse_signature(s)) for s in found]
    output.table(("METHOD", "SHAPE", "PARAMETERS", "RETURNS"), rows, empty="No methods.")


def _parse_signature(data: dict[str, Any]) -> resources_pb2.MethodSignature:
    return json_format.ParseDict(data, resources_pb2.MethodSignature())


def _signature_row(sig: resources_pb2.MethodSignature) -> list[str]:
    shape = resources_pb2.RunnerMethodType.Name(sig.method_type)
    params = "\n".join(_parameter(f) for f in sig.input_fields) or "-"
    returns = _field_type(sig.output_fields[0]) if sig.output_fields else "-"
    return [escape(sig.name), shape, escape(params), escape(returns)]


def _parameter(field: resources_pb2.ModelTypeField) -> str:
    text = f"{field.name}: {_field_type(field)}"
    if field.required:
        return text
    default = repr(field.default) if field.type == STR else field.default
    return f"{text} = {default}"


def _field_type(field: resources_pb2.ModelTypeField) -> str:
    name = type_name(field)
    return f"Iterator[{name}]" if field.iterator else name


# -- local-test ---------------------------------------------------------------------------------


@model.command("local-test")
@click.argument("model_path", default=".", type=click.Path(path_type=Path))
@click.option(
    "--home",
    type=click.Path(path_type=Path),
    default=None,
    help="Where environments are cached (HOME/local-envs). Default: ~/.orchard",
)
@click.option(
    "--find-links",
    "find_links",
    multiple=True,
    envvar="ORCHARD_FIND_LINKS",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="A folder of wheels the environment may install from (repeatable).",
)
@click.option(
    "--offline",
    is_flag=True,
    envvar="ORCHARD_OFFLINE",
    help="Build the environment from --find-links and uv's cache only (no index).",
)
@click.option(
    "--python-fallback/--no-python-fallback",
    default=True,
    show_default=True,
    help="Build with this Python when build_info.python_version is not installed.",
)
def local_test(
    model_path: Path,
    home: Path | None,
    find_links: tuple[Path, ...],
    offline: bool,
    python_fallback: bool,
) -> None:
    """Call each method of a package in its own environment.

    Builds the environment of the package at MODEL_PATH as the server does (or reuses it),
    loads the model there and calls each method once with example arguments through the
    runner's request adapter, then the class's test() if it has one. Exits 1 if any fails."""
    package = load_package(model_path)
    settings = _local_build_settings(home, find_links, offline, python_fallback)
    env = localtest.build_env(package, settings, say=lambda line: click.echo(line, err=True))
    code = localtest.run_in_env(env, package.root, click.echo)
    if code != 0:
        raise errors.ModelInvalid(
            f"local test of {package.root} failed (exit code {code}); the output above says "
            "which method failed and why"
        )


def _local_build_settings(
    home: Path | None, find_links: tuple[Path, ...], offline: bool, python_fallback: bool
) -> BuildSettings:
    import uv

    root = (home or Path.home() / ".orchard").expanduser()
    return BuildSettings(
        envs=root / "local-envs",
        runtime=root / "runtime",
        uv=uv.find_uv_bin(),
        find_links=[path.resolve() for path in find_links],
        offline=offline,
        python_fallback=python_fallback,
    )
