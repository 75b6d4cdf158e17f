"""``python -m orchard.runners.serve``: load a model package and serve it as a runner replica.

This runs inside the model's environment, which holds only grpcio, protobuf, clarifai-grpc,
pyyaml, pydantic and the model's requirements: so argparse (not click), and no import of
Orchard's server, store, services, SDK or CLI.

Steps: the health probes start (``--health-port``; liveness at once, startup once the model is
loaded, readiness while a stream is open and not draining), the model class is imported from
``1/model.py`` with its real imports, instantiated, and ``load_model()`` is called once (in a
worker thread); then the :class:`~orchard.runners.runner.Runner` connects to the server and
serves until SIGTERM/SIGINT (a drain; a second signal stops waiting for held items).

Exit codes: 0 after a drain (or a signal while loading); 1 when the model fails to load or the
server refuses the runner; 3 when the server stayed unreachable past ``--server-gone-grace``;
2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from orchard import errors
from orchard.runners.adapters import adapter_for
from orchard.runners.health import LIVENESS, READINESS, STARTUP, HealthServer
from orchard.runners.models.loading import load_model_class
from orchard.runners.runner import (
    MAX_OUTPUT_BYTES,
    Exit,
    Runner,
    RunnerSettings,
    default_replica_id,
)

log = logging.getLogger("orchard.runners")

DEFAULT_CONCURRENCY = 16  # config.yaml's num_threads default (orchard.packaging.config)
CONFIG = "config.yaml"  # the package's config (orchard.packaging.CONFIG, which packaging owns)
EXIT_CODES = {Exit.DRAINED: 0, Exit.REFUSED: 1, Exit.SERVER_GONE: 3}
LOAD_FAILED = 1
EXTRA_THREADS = 4  # beyond one per slot: loading, closing abandoned generators


class LoadFailed(Exception):
    """The model could not be imported, built or loaded; the message says why."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The arguments, checked; ``concurrency`` filled in from config.yaml when not given."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.pat_stdin:
        args.pat = _read_pat()
    if not args.pat:
        parser.error("a PAT is needed: pass --pat or set ORCHARD_PAT")
    if args.concurrency < 0:
        parser.error("--concurrency must be at least 1")
    args.concurrency = args.concurrency or _num_threads(parser, args.package)
    return args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m orchard.runners.serve",
        description="Serve a model package as an Orchard runner replica.",
    )
    add = parser.add_argument
    add("--package", required=True, type=Path, help="an unpacked model package folder")
    add(
        "--server",
        required=True,
        help="the Orchard server: HOST:PORT, http(s)://HOST:PORT, or link:PATH (its local link)",
    )
    add("--pat", default=os.environ.get("ORCHARD_PAT", ""), help="PAT (default: $ORCHARD_PAT)")
    add(
        "--pat-stdin",
        action="store_true",
        help="read the PAT from the first line of standard input (how the server hands a "
        "replica its token: no other process can read it there)",
    )
    add("--runner-id", required=True, help="the runner this replica serves for")
    add("--user-id", default="", help="the runner's owner (sent in the hello)")
    add("--nodepool-id", default="", help="sent in the hello")
    add("--compute-cluster-id", default="", help="sent in the hello")
    add("--replica-id", default=default_replica_id(), help="default: HOSTNAME-PID")
    add("--concurrency", type=int, default=0, help="items at once (default: num_threads)")
    add("--health-port", type=int, default=0, help="health probes' HTTP port (0: none)")
    add("--health-host", default="127.0.0.1", help="default: 127.0.0.1")
    add(
        "--server-gone-grace",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="exit when the server has been unreachable this long (default: 60)",
    )
    add(
        "--drain-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="on SIGTERM, how long held items may take to finish (default: 30)",
    )
    add(
        "--max-output-bytes",
        type=int,
        default=MAX_OUTPUT_BYTES,
        metavar="BYTES",
        help="a larger output is replaced by a failure saying so (default: 64 MiB)",
    )
    add("--log-level", default="INFO", help="default: INFO")
    return parser


def _read_pat() -> str:
    """The first line of standard input; stdin is then /dev/null, so nothing else reads it."""
    line = sys.stdin.readline().strip()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    return line


def _num_threads(parser: argparse.ArgumentParser, package: Path) -> int:
    """``num_threads`` from the package's config.yaml (default 16)."""
    try:
        config = yaml.safe_load((package / CONFIG).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        parser.error(f"cannot read {package / CONFIG}: {exc}")
    value = config.get("num_threads", DEFAULT_CONCURRENCY) if isinstance(config, dict) else None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        parser.error(f"{package / CONFIG}: num_threads must be an integer of at least 1")
    return value


def settings_from(args: argparse.Namespace) -> RunnerSettings:
    return RunnerSettings(
        server=args.server,
        pat=args.pat,
        runner_id=args.runner_id,
        capacity=args.concurrency,
        user_id=args.user_id,
        nodepool_id=args.nodepool_id,
        compute_cluster_id=args.compute_cluster_id,
        replica_id=args.replica_id,
        server_gone_grace=args.server_gone_grace,
        drain_timeout=args.drain_timeout,
        max_output_bytes=args.max_output_bytes,
    )


def load_model(package: Path) -> Any:
    """The package's model, instantiated, its ``load_model()`` called once; raises LoadFailed."""
    try:
        cls = load_model_class(package, stub_missing=False)
    except errors.OrchardError as exc:
        raise LoadFailed(exc.message) from None
    try:
        model = cls()
        model.load_model()
    except Exception as exc:
        log.error("%s.load_model() raised", cls.__name__, exc_info=True)
        raise LoadFailed(f"{cls.__name__}.load_model() raised {type(exc).__name__}: {exc}") from exc
    return model


class _Replica:
    """What the signal handlers and the probes see while the replica loads and serves."""

    def __init__(self) -> None:
        self.stopped = asyncio.Event()
        self.loaded = False
        self.runner: Runner | None = None

    def stop(self) -> None:
        self.stopped.set()
        if self.runner is not None:
            self.runner.stop()

    def checks(self) -> dict[str, Any]:
        return {
            LIVENESS: lambda: True,
            STARTUP: lambda: self.loaded,
            READINESS: lambda: self.loaded and self.runner is not None and self.runner.ready,
        }


async def serve(args: argparse.Namespace) -> int:
    """Load the model, then serve it until drained; returns the exit code."""
    replica = _Replica()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, replica.stop)
    health = HealthServer(replica.checks(), args.health_host, args.health_port)
    if args.health_port > 0:
        try:
            await health.start()
        except OSError as exc:
            where = f"{args.health_host}:{args.health_port}"
            print(f"error: cannot serve health probes on {where}: {exc}", file=sys.stderr)
            return 1
    try:
        return await _load_and_run(args, replica)
    finally:
        await health.close()


async def _load_and_run(args: argparse.Namespace, replica: _Replica) -> int:
    log.info("loading the model in %s", args.package)
    loading = asyncio.ensure_future(asyncio.to_thread(load_model, args.package))
    stopped = asyncio.ensure_future(replica.stopped.wait())
    await asyncio.wait({loading, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if not loading.done():
        log.info("stopped while loading the model")
        return 0
    try:
        model = loading.result()
    except LoadFailed as exc:
        print(f"error: the model in {args.package} failed to load: {exc}", file=sys.stderr)
        return LOAD_FAILED
    adapter = adapter_for(model)
    replica.loaded = True
    replica.runner = Runner(adapter, settings_from(args))
    name = type(model).__name__
    log.info("serving %s (%s) as runner %s", name, adapter.kind, args.runner_id)
    if replica.stopped.is_set():
        return 0
    return EXIT_CODES[await replica.runner.run()]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    executor = ThreadPoolExecutor(args.concurrency + EXTRA_THREADS, thread_name_prefix="model")
    loop = asyncio.new_event_loop()
    loop.set_default_executor(executor)
    try:
        code = loop.run_until_complete(serve(args))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()
    _leave_threads(executor, code)
    return code


def _leave_threads(executor: ThreadPoolExecutor, code: int, timeout: float = 2.0) -> None:
    """Let idle worker threads end; model code still running in one (which cannot be
    interrupted) does not keep the process alive: exit at once with ``code``."""
    waiter = threading.Thread(
        target=executor.shutdown, kwargs={"cancel_futures": True}, daemon=True
    )
    waiter.start()
    waiter.join(timeout)
    if waiter.is_alive():
        log.warning("model code is still running in a worker thread; exiting without it")
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
