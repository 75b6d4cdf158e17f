"""`orchard model`: upload a model package and follow its build; show its method signatures;
test it locally in its own environment; predict with a deployed model."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import click
from clarifai_grpc.grpc.api import resources_pb2
from google.protobuf import json_format
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from orchard import errors
from orchard.cli import model_local_test, output
from orchard.cli.common import CliState, build_options, pass_state
from orchard.cli.groups import AliasedGroup
from orchard.client import predictions
from orchard.client.model import Model
from orchard.client.uploads import upload_model
from orchard.codec.serializers import type_name
from orchard.packaging.inspect import run_inspection
from orchard.packaging.package import load_package
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
@build_options
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
    env = model_local_test.build_env(package, settings, say=lambda line: click.echo(line, err=True))
    code = model_local_test.run_in_env(env, package.root, click.echo)
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


# -- predict ------------------------------------------------------------------------------------

MethodType = resources_pb2.RunnerMethodType
# The call each method name makes when the model has no signature for it (and for these names,
# which the server routes by itself): the official SDK's predict/generate/stream entry points.
_DEFAULT_SHAPES = {"predict": "predict", "generate": "generate", "stream": "stream"}
_SHAPES = {
    MethodType.UNARY_UNARY: "predict",
    MethodType.UNARY_STREAMING: "generate",
    MethodType.STREAMING_STREAMING: "stream",
}


@model.command("predict")
@click.option("--model_url", "--model-url", "model_url", metavar="URL", help="The model's URL.")
@click.option("--model_id", metavar="ID", help="The model id (with --app_id).")
@click.option("--user_id", metavar="ID", help="The model's owner (default: you).")
@click.option("--app_id", metavar="ID", help="The app holding the model.")
@click.option("--url", "input_url", metavar="URL", help="Predict on the content at URL.")
@click.option("-b", "--bytes", "input_text", metavar="TEXT", help="Predict on TEXT (as bytes).")
@click.option(
    "-f",
    "--file_path",
    "--file-path",
    "file_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Predict on the file's bytes.",
)
@click.option(
    "-i",
    "--input_type",
    type=click.Choice(predictions.INPUT_TYPES),
    help="The input's type. Default: from the model type.",
)
@click.option("-dpl_id", "--deployment_id", metavar="ID", help="Run in this deployment.")
@click.option("-cc_id", "--compute_cluster_id", metavar="ID", help="Run in this cluster...")
@click.option("-np_id", "--nodepool_id", metavar="ID", help="...in this nodepool.")
@click.option(
    "-dpl_usr_id",
    "--deployment_user_id",
    metavar="ID",
    help="The owner of the deployment or cluster (default: you).",
)
@click.option("--inference_params", metavar="JSON", help="Model parameters, a JSON object.")
@click.option("--output_config", metavar="JSON", help="Output config, a JSON object.")
@click.option(
    "--method",
    default="predict",
    show_default=True,
    help="The model method to call; streaming methods print outputs as they arrive.",
)
@click.option(
    "-o",
    "--output",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text: each output's text when it has one, else its JSON; json: always JSON.",
)
@pass_state
def predict(state: CliState, **options: Any) -> None:
    """Predict with a model on a URL, text or a file.

    \b
    orchard model predict --model_url https://HOST/USER/APP/models/MODEL --bytes "Hello"
    orchard model predict --model_id m --app_id a --file_path photo.jpg --deployment_id d
    """
    kind, value = _prediction_input(options)
    mdl = state.client(Model, **_model_args(options))
    shape, method = _call_shape(mdl, options["method"])
    call = getattr(mdl, f"{shape}_by_{kind}")
    if shape == "stream" and kind != "filepath":
        value = [value]
    with _waiting_notes():
        result = call(
            value,
            options["input_type"],
            _json_option(options, "inference_params"),
            _json_option(options, "output_config"),
            method=method,
        )
        responses: Iterable[Any] = [result] if shape == "predict" else result
        output.show_outputs(responses, options["output_format"] == "json", shape != "predict")


def _prediction_input(options: dict[str, Any]) -> tuple[str, Any]:
    given = [
        (kind, value)
        for kind, value in (
            ("url", options["input_url"]),
            ("bytes", options["input_text"]),
            ("filepath", options["file_path"]),
        )
        if value is not None
    ]
    if len(given) != 1:
        raise click.UsageError(
            f"give exactly one input: --url, --bytes or --file_path (got {len(given) or 'none'})"
        )
    kind, value = given[0]
    return kind, value.encode("utf-8") if kind == "bytes" else value


_MODEL_ARGS = (
    "model_id",
    "user_id",
    "app_id",
    "deployment_id",
    "compute_cluster_id",
    "nodepool_id",
    "deployment_user_id",
)


def _model_args(options: dict[str, Any]) -> dict[str, Any]:
    if not options["model_url"] and not (options["model_id"] and options["app_id"]):
        raise click.UsageError("name the model: --model_url URL, or --model_id and --app_id")
    return {"url": options["model_url"], **{name: options[name] for name in _MODEL_ARGS}}


def _call_shape(mdl: Model, method: str) -> tuple[str, str | None]:
    """Which helper family to call (predict, generate, stream) and the method name to send."""
    if method in _DEFAULT_SHAPES:
        return _DEFAULT_SHAPES[method], None
    signature = mdl.signatures().get(method)
    if signature is None:
        methods = ", ".join(mdl.available_methods()) or "none"
        raise errors.UserError(f"model {mdl.id!r} has no method {method!r}; its methods: {methods}")
    if signature.method_type not in _SHAPES:
        raise errors.UserError(f"method {method!r} has a call shape the CLI cannot make")
    return _SHAPES[signature.method_type], method


def _json_option(options: dict[str, Any], name: str) -> dict[str, Any] | None:
    text = options[name]
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise click.UsageError(f"--{name} is not JSON ({exc}); e.g. '{{\"key\": 1}}'") from None
    if not isinstance(value, dict):
        raise click.UsageError(f"--{name} must be a JSON object, got {text!r}")
    return value


class _StderrNotes(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        click.echo(record.getMessage(), err=True)


@contextlib.contextmanager
def _waiting_notes() -> Iterator[None]:
    """Show the SDK's "Model is still deploying" notes on stderr while a call waits."""
    logger = logging.getLogger(predictions.__name__)
    handler, level = _StderrNotes(logging.INFO), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
