"""The replica command line has one builder (orchard.runners.command); what it builds is what
``orchard.runners.serve`` parses, for every place that starts a replica."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from orchard.cli.runner import replica_command
from orchard.providers.ray_replica import serve_argv
from orchard.runners.command import MODULE, ServeArgs, serve_command
from orchard.runners.serve import build_parser

FULL = ServeArgs(
    runner_id="runner-1",
    user_id="alice",
    nodepool_id="pool",
    compute_cluster_id="cc",
    replica_id="dep-1234",
    concurrency=3,
    server_gone_grace=12.5,
    drain_timeout=7.0,
    max_output_bytes=1 << 20,
    pat_stdin=True,
)


def parse(command: tuple[str, ...] | list[str]) -> object:
    assert list(command[1:3]) == ["-m", MODULE]
    return build_parser().parse_args(list(command[3:]))


def test_every_argument_the_builder_writes_is_read_back_by_the_runner() -> None:
    args = parse(serve_command("/env/bin/python", Path("/pkg"), "link:/s", FULL.argv()))
    assert vars(args) | {"pat": "", "log_level": "INFO"} == {
        "package": Path("/pkg"),
        "server": "link:/s",
        "pat": "",
        "pat_stdin": True,
        "runner_id": "runner-1",
        "user_id": "alice",
        "nodepool_id": "pool",
        "compute_cluster_id": "cc",
        "replica_id": "dep-1234",
        "concurrency": 3,
        "health_port": 0,
        "health_host": "127.0.0.1",
        "server_gone_grace": 12.5,
        "drain_timeout": 7.0,
        "max_output_bytes": 1 << 20,
        "log_level": "INFO",
    }


def test_unset_arguments_leave_the_runner_defaults() -> None:
    minimal = ServeArgs("runner-1", "alice", "pool", "cc", "r-1")
    args = parse(serve_command("python", "/pkg", "127.0.0.1:1", minimal.argv()))
    defaults = build_parser().parse_args(["--package", "p", "--server", "s", "--runner-id", "r"])
    for name in ("concurrency", "server_gone_grace", "drain_timeout", "max_output_bytes"):
        assert getattr(args, name) == getattr(defaults, name)
    assert not args.pat_stdin


def test_orchard_runner_builds_its_replicas_with_the_same_builder() -> None:
    client = SimpleNamespace(base_url="127.0.0.1:9", user_id="alice")
    nodepool = SimpleNamespace(id="pool", compute_cluster=SimpleNamespace(id="cc"))
    command = replica_command("py", Path("/pkg"), client, "runner-1", nodepool, "r-1", 2)  # type: ignore[arg-type]
    args = ServeArgs("runner-1", "alice", "pool", "cc", "r-1", concurrency=2)
    assert command == list(serve_command("py", Path("/pkg"), "127.0.0.1:9", args.argv()))


def test_a_ray_node_prefixes_the_bundle_arguments_as_the_builder_does() -> None:
    args = list(FULL.argv())
    assert serve_argv("py", "/pkg", "host:1", args) == list(
        serve_command("py", "/pkg", "host:1", FULL.argv())
    )
