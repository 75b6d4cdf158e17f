"""`orchard runner`: attach runner replicas to a deployment by hand, on the server's machine.

    orchard runner --deployment echo-dep [--replicas 2] [--home ~/.orchard]

It makes (or reuses) a runner of the deployment's model version in the deployment's first
nodepool, then runs replica processes of ``python -m orchard.runners.serve`` in the
version's built environment under the server's home (package and environment are read from
there), until Ctrl-C, which drains them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
from google.protobuf import json_format

from orchard import errors
from orchard.cli import output
from orchard.cli.common import CliState, pass_state
from orchard.client.base import BaseClient
from orchard.client.model import Model
from orchard.client.nodepool import Nodepool
from orchard.runners.command import ServeArgs, serve_command


def ensure_runner(client: BaseClient, deployment: Any, nodepool: Any) -> str:
    """The id of a runner of the deployment's version in ``nodepool`` (made if missing)."""
    model = deployment.worker.model
    pool = Nodepool(nodepool.id, compute_cluster_id=nodepool.compute_cluster.id, _client=client)
    for runner in pool.list_runners(model_version_ids=[model.model_version.id]):
        return str(runner.id)
    worker = json_format.MessageToDict(model, preserving_proto_field_name=True)
    created = pool.create_runner(
        {
            "description": f"replicas of deployment {deployment.id}",
            "worker": {"model": worker},
            "num_replicas": 1,
        }
    )
    return str(created.id)


def version_files(client: BaseClient, model: Any, home: Path) -> tuple[Path, Path]:
    """(package folder, environment python) of a built version under the server's home."""
    version = Model(model_id=model.id, app_id=model.app_id, _client=client).version(
        model.model_version.id
    )
    where = version.metadata.fields.get("orchard")
    if where is None:
        raise errors.UserError(
            f"version {version.id} has no uploaded package; upload one with "
            "`orchard model upload`, or serve a folder with `orchard model serve PATH`"
        )
    fields = where.struct_value.fields
    package = home / "packages" / "unpacked" / fields["package_sha256"].string_value
    python = home / "envs" / fields["environment"].string_value / "bin" / "python"
    if not package.is_dir() or not python.exists():
        raise errors.UserError(
            f"version {version.id} is not built under {home}; pass the "
            "server's --home, or wait for its build to finish"
        )
    return package, python


def replica_command(
    python: Path | str,
    package: Path,
    client: BaseClient,
    runner_id: str,
    nodepool: Any,
    replica: str,
    concurrency: int | None,
) -> list[str]:
    args = ServeArgs(
        runner_id=runner_id,
        user_id=client.user_id,
        nodepool_id=nodepool.id,
        compute_cluster_id=nodepool.compute_cluster.id,
        replica_id=replica,
        concurrency=concurrency,
    )
    return list(serve_command(python, package, client.base_url, args.argv()))


def run_replicas(commands: list[list[str]], pat: str) -> int:
    """Start the replicas, wait for them; Ctrl-C or SIGTERM drains them all."""
    env = {**os.environ, "ORCHARD_PAT": pat}
    procs = [subprocess.Popen(command, env=env) for command in commands]

    def drain(signum: int, frame: Any) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, drain)
    try:
        codes = [proc.wait() for proc in procs]
    except KeyboardInterrupt:
        drain(signal.SIGINT, None)
        codes = [proc.wait() for proc in procs]
    finally:
        signal.signal(signal.SIGTERM, previous)
    return max(codes, default=0)


@click.command("runner")
@click.option("--deployment", "deployment_id", required=True, help="The deployment to serve.")
@click.option("--replicas", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--concurrency",
    type=click.IntRange(1, 1024),
    default=None,
    help="Items each replica runs at once (default: the model's num_threads).",
)
@click.option(
    "--home",
    type=click.Path(path_type=Path),
    default=Path.home() / ".orchard",
    help="The server's state directory, where built versions live.",
)
@pass_state
def runner(
    state: CliState, deployment_id: str, replicas: int, concurrency: int | None, home: Path
) -> None:
    """Run replicas of a deployment's model on this machine until Ctrl-C."""
    user = state.user()
    deployment = user.deployment(deployment_id).proto
    if not deployment.nodepools:
        raise errors.UserError(f"deployment {deployment_id!r} has no nodepool")
    nodepool = deployment.nodepools[0]
    runner_id = ensure_runner(user, deployment, nodepool)
    package, python = version_files(user, deployment.worker.model, home)
    commands = [
        replica_command(
            python,
            package,
            user,
            runner_id,
            nodepool,
            f"{os.uname().nodename}-{os.getpid()}-{i}",
            concurrency,
        )
        for i in range(replicas)
    ]
    output.say(
        f"Serving deployment '{deployment_id}' with {replicas} replica(s) of runner "
        f"{runner_id}; Ctrl-C drains and stops them."
    )
    sys.exit(run_replicas(commands, user.pat))
