"""The command line that starts a runner replica: ``python -m orchard.runners.serve ...``.

Every place that starts a replica builds it here: the orchestrator (for its providers, and the
arguments it ships to Ray nodes in a :class:`~orchard.providers.base.ReplicaBundle`),
``orchard runner`` and ``orchard model serve``. ``tests/test_replica_command.py`` parses what it
builds with :func:`orchard.runners.serve.build_parser`, so the two cannot drift apart. (The Ray
node's copy of the prefix, in the stdlib-only :mod:`orchard.providers.ray_replica`, is checked
there too.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MODULE = "orchard.runners.serve"


@dataclass(frozen=True)
class ServeArgs:
    """``orchard.runners.serve``'s arguments but its package and server (which differ on
    machines that share no disk with the server); ``None`` leaves the runner's default."""

    runner_id: str
    user_id: str
    nodepool_id: str
    compute_cluster_id: str
    replica_id: str
    concurrency: int | None = None  # default: the model's num_threads
    server_gone_grace: float | None = None
    drain_timeout: float | None = None
    max_output_bytes: int | None = None
    pat_stdin: bool = False  # the token comes on standard input, never in argv or environment

    def argv(self) -> tuple[str, ...]:
        args = [
            "--runner-id",
            self.runner_id,
            "--user-id",
            self.user_id,
            "--nodepool-id",
            self.nodepool_id,
            "--compute-cluster-id",
            self.compute_cluster_id,
            "--replica-id",
            self.replica_id,
        ]
        if self.concurrency:
            args += ["--concurrency", str(self.concurrency)]
        if self.server_gone_grace is not None:
            args += ["--server-gone-grace", f"{self.server_gone_grace:g}"]
        if self.drain_timeout is not None:
            args += ["--drain-timeout", f"{self.drain_timeout:g}"]
        if self.max_output_bytes is not None:
            args += ["--max-output-bytes", str(self.max_output_bytes)]
        if self.pat_stdin:
            args.append("--pat-stdin")
        return tuple(args)


def serve_command(
    python: Path | str, package: Path | str, server: str, args: tuple[str, ...]
) -> tuple[str, ...]:
    """The whole command: ``python -m orchard.runners.serve --package P --server S ARGS``."""
    return (str(python), "-m", MODULE, "--package", str(package), "--server", server, *args)
