"""How the CLI shows things: rich tables for lists, YAML for one resource, one-line messages."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import click
import yaml
from clarifai_grpc.grpc.api import resources_pb2
from google.protobuf import json_format
from rich.console import Console
from rich.table import Table

WIDE = 200  # when stdout is not a terminal, do not wrap tables at 80 columns


def console() -> Console:
    return Console(width=None if sys.stdout.isatty() else WIDE, highlight=False)


def say(message: str) -> None:
    """A one-line success message."""
    click.echo(message)


def say_removed(message: str, status: Any) -> None:
    """A delete's success message, with what the server says it removed."""
    details = getattr(status, "details", "")
    say(f"{message[:-1]}: {details}." if details and message.endswith(".") else message)


def table(columns: Sequence[str], rows: Iterable[Sequence[str]], empty: str) -> None:
    """Print ``rows`` under ``columns``, or the ``empty`` message when there are none."""
    rows = list(rows)
    if not rows:
        say(empty)
        return
    grid = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        grid.add_column(column, overflow="fold")
    for row in rows:
        grid.add_row(*row)
    console().print(grid)


def print_yaml(top_key: str, message: Any) -> None:
    """A resource as YAML under its config top key, enums as numbers as in a config file."""
    data = json_format.MessageToDict(
        message, preserving_proto_field_name=True, use_integers_for_enums=True
    )
    print_dict({top_key: data})


def print_dict(data: dict[str, Any]) -> None:
    click.echo(yaml.safe_dump(data, sort_keys=False).rstrip())


def when(message: Any, name: str = "created_at") -> str:
    if not message.HasField(name):
        return ""
    return str(getattr(message, name).ToDatetime().strftime("%Y-%m-%d %H:%M:%S"))


# -- rows ------------------------------------------------------------------------------------


def cluster_row(cc: Any) -> list[str]:
    return [cc.id, cc.cloud_provider.id, cc.region, cc.cluster_type, cc.description, when(cc)]


def nodepool_row(np: Any) -> list[str]:
    status = resources_pb2.Nodepool.NodepoolStatus.Name(np.status)
    return [
        np.id,
        np.compute_cluster.id,
        ", ".join(t.id for t in np.instance_types),
        str(np.min_instances),
        str(np.max_instances),
        status.removeprefix("NODEPOOL_STATUS_").lower(),
    ]


def deployment_row(dep: Any) -> list[str]:
    worker = dep.desired_worker if dep.HasField("desired_worker") else dep.worker
    scale = dep.autoscale_config
    status = resources_pb2.Deployment.Status.Name(dep.status).lower()
    if dep.HasField("deployment_metrics"):
        metrics = dep.deployment_metrics
        status += f" ({metrics.live_replicas}/{metrics.desired_replicas} live)"
    return [
        dep.id,
        worker.model.id,
        worker.model.model_version.id,
        ", ".join(nodepool_paths(dep)),
        f"{scale.min_replicas}-{scale.max_replicas}",
        status,
    ]


def nodepool_paths(dep: Any) -> list[str]:
    """``cluster/nodepool`` for each nodepool a deployment names, in either spelling."""
    paths = [f"{np.compute_cluster.id}/{np.id}" for np in dep.nodepools]
    for entry in dep.deployment_nodepools:
        ref = entry.nodepool if entry.HasField("nodepool") else entry
        paths.append(f"{ref.compute_cluster.id}/{ref.id}")
    # The server may fill both spellings; show each nodepool once.
    return list(dict.fromkeys(path.lstrip("/") for path in paths))


CLUSTER_COLUMNS = ("ID", "PROVIDER", "REGION", "TYPE", "DESCRIPTION", "CREATED")
NODEPOOL_COLUMNS = ("ID", "CLUSTER", "INSTANCE TYPE(S)", "MIN", "MAX", "STATUS")
DEPLOYMENT_COLUMNS = ("ID", "MODEL", "VERSION", "NODEPOOLS", "MIN-MAX REPLICAS", "STATUS")


# -- prediction outputs ------------------------------------------------------------------------


def show_outputs(responses: Iterable[Any], as_json: bool, streaming: bool) -> None:
    """Each output as it arrives: its text (a stream's text chunks run on in one line), or
    its data as one line of JSON (always, with ``as_json``)."""
    open_line = False
    for response in responses:
        for output in response.outputs:
            text = None if as_json else output_text(output.data)
            if text is None:
                if open_line:
                    click.echo()
                click.echo(json.dumps(_data_dict(output.data)))
                open_line = False
            else:
                click.echo(text, nl=not streaming)
                open_line = streaming
    if open_line:
        click.echo()


def output_text(data: Any) -> str | None:
    """``text.raw`` or ``string_value``, at the top or in the ``return`` part; else None."""
    if data.HasField("text"):
        return str(data.text.raw)
    if data.string_value:
        return str(data.string_value)
    for part in data.parts:
        if part.id == "return":
            return output_text(part.data) if part.data.ByteSize() else ""
    return None


def _data_dict(data: Any) -> dict[str, Any]:
    return json_format.MessageToDict(data, preserving_proto_field_name=True)
