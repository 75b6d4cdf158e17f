"""``python -m orchard.providers.ray_driver``: the ``ray`` provider's Ray driver, one process per
configured Ray cluster, started by the server.

Why a process of its own: Ray's driver is global to a process (one cluster per process), its
calls block while the cluster is unreachable, and a driver whose cluster stays unreachable for a
minute is ended by Ray itself. None of that may happen to the API server; here it only costs a
restart of this process.

The protocol is JSON, one object per line: commands on stdin, events on stdout (Ray's own
output goes to stderr). Commands (``op``):

- ``adopt`` ``{"ids": [...]}``: the replicas the server still counts on this cluster; their
  actors are followed again, any other actor of the namespace (left by an earlier server) is
  killed, and a listed replica without an actor is reported ended;
- ``start`` ``{"spec": {...}, "node": id, "selector": {...}, "resources": {...},
  "package": path, "runtime": path}``: a replica actor on that node, the package archive and the
  runtime folder sent through the object store (each once);
- ``stop`` ``{"id": ..., "grace": seconds}``: drain, then kill;
- ``demand`` ``{"bundles": [...], "selectors": [...]}``: a request to the autoscaler;
- ``exit`` ``{"grace": seconds}``: stop every replica, then end (also on end of input).

Events (``event``): ``hello`` once connected; ``nodes`` every 2 s (every node with its labels
and resources; also the heartbeat the server watches); ``config`` (the autoscaler's node groups,
or null); ``output`` (lines a replica printed); ``ended`` (``code`` and ``reason``); ``bye``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import queue
import sys
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import ray  # type: ignore[import-not-found,unused-ignore]
from ray.util.scheduling_strategies import (  # type: ignore[import-not-found,unused-ignore]
    NodeAffinitySchedulingStrategy,
)

from orchard.providers import ray_replica

log = logging.getLogger("orchard.ray_driver")

TICK = 0.2
NODES_EVERY = 2.0
CONFIG_EVERY = 15.0
READ_EVERY = 0.5
FINAL_READ_WAIT = 5.0
KILL_MARGIN = 10.0  # past a stop's grace, before the actor itself is killed


class Wire:
    """Events out, on the file descriptor that was stdout (stdout itself now goes to stderr,
    so nothing Ray prints can break a line of the protocol)."""

    def __init__(self) -> None:
        self._out: BinaryIO = os.fdopen(os.dup(1), "wb")
        os.dup2(2, 1)
        sys.stdout = sys.stderr

    def send(self, event: str, **fields: Any) -> None:
        self._out.write(json.dumps({"event": event, **fields}).encode() + b"\n")
        self._out.flush()


@dataclass
class Tracked:
    id: str
    actor: Any
    run: Any  # the ObjectRef of ReplicaActor.run: ready when the replica has ended
    offset: int = 0
    reading: Any = None
    read_at: float = 0.0
    kill_at: float | None = None
    result: dict[str, Any] | None = None  # set when ended, until the last output is read
    last_read: bool = False  # one more read is due before the end is reported
    final_until: float = 0.0


class Driver:
    def __init__(self, wire: Wire, namespace: str) -> None:
        self.wire, self.namespace = wire, namespace
        ray.cloudpickle.register_pickle_by_value(ray_replica)
        self.actor_class = ray.remote(ray_replica.ReplicaActor)
        self.config_task = ray.remote(ray_replica.cluster_config).options(num_cpus=0)
        self.demand_task = ray.remote(ray_replica.request_resources).options(num_cpus=0)
        self.tracked: dict[str, Tracked] = {}
        self.objects: dict[str, Any] = {}  # package digest / runtime version: ObjectRef
        self.config_ref: Any = None
        self.nodes_at = 0.0
        self.config_at = 0.0
        self.exiting_until: float | None = None

    # -- commands ------------------------------------------------------------------------------

    def handle(self, command: dict[str, Any]) -> None:
        op = command.get("op")
        if op == "adopt":
            self.adopt(set(command["ids"]))
        elif op == "start":
            try:
                self.start(command)
            except Exception as exc:  # the replica ends; the driver goes on
                log.exception("could not start %s", command["spec"]["id"])
                reason = f"Ray refused to start it: {first_lines(str(exc))}"
                self.wire.send("ended", id=command["spec"]["id"], code=None, reason=reason)
        elif op == "stop":
            self.stop(command["id"], float(command["grace"]))
        elif op == "demand":
            self.demand_task.remote(command["bundles"], command["selectors"])
        elif op == "exit":
            self.begin_exit(float(command.get("grace", 0)))

    def adopt(self, ids: set[str]) -> None:
        for name in ray.util.list_named_actors():
            actor = ray.get_actor(name)
            if name in ids:
                self.tracked[name] = Tracked(name, actor, actor.run.remote(None, None))
            else:
                log.info("killing actor %s, left by an earlier Orchard server", name)
                ray.kill(actor)
        for missing in ids - set(self.tracked):
            self.wire.send(
                "ended",
                id=missing,
                code=None,
                reason="its Ray actor is gone (the Ray cluster lost it while Orchard could "
                "not see the cluster)",
            )

    def start(self, command: dict[str, Any]) -> None:
        spec = command["spec"]
        resources = command["resources"]
        options: dict[str, Any] = {
            "name": spec["id"],
            "lifetime": "detached",
            "max_restarts": 0,
            "max_concurrency": 8,
            "num_cpus": resources["num_cpus"],
            "num_gpus": resources["num_gpus"],
            "label_selector": command["selector"],
            "scheduling_strategy": NodeAffinitySchedulingStrategy(command["node"], soft=False),
        }
        if resources["memory"]:
            options["memory"] = resources["memory"]
        package = self.object(spec["package_digest"], lambda: Path(command["package"]).read_bytes())
        runtime = self.object(
            "runtime-" + spec["runtime_version"], lambda: tar_folder(Path(command["runtime"]))
        )
        actor: Any = self.actor_class.options(**options).remote(spec)
        self.tracked[spec["id"]] = Tracked(spec["id"], actor, actor.run.remote(package, runtime))

    def object(self, key: str, make: Any) -> Any:
        if key not in self.objects:
            self.objects[key] = ray.put(make())
        return self.objects[key]

    def stop(self, replica_id: str, grace: float) -> None:
        tracked = self.tracked.get(replica_id)
        if tracked is None or tracked.kill_at is not None:
            return
        tracked.actor.stop.remote(grace)
        tracked.kill_at = time.monotonic() + grace + KILL_MARGIN

    def begin_exit(self, grace: float) -> None:
        """Stop every replica; a second call (the end of input after an ``exit``) never
        shortens the first one's grace."""
        for replica_id in list(self.tracked):
            self.stop(replica_id, grace)
        until = time.monotonic() + grace + KILL_MARGIN
        self.exiting_until = max(until, self.exiting_until or until)

    # -- each tick -----------------------------------------------------------------------------

    def step(self) -> None:
        now = time.monotonic()
        self.collect_ends(now)
        self.collect_reads(now)
        for tracked in list(self.tracked.values()):
            if tracked.kill_at is not None and now > tracked.kill_at and tracked.result is None:
                log.info("killing the actor of %s: it did not stop in time", tracked.id)
                ray.kill(tracked.actor)
                tracked.kill_at = now + KILL_MARGIN
        if now >= self.nodes_at:
            self.nodes_at = now + NODES_EVERY
            self.wire.send("nodes", nodes=nodes())
        if self.config_ref is None and now >= self.config_at:
            self.config_at = now + CONFIG_EVERY
            self.config_ref = self.config_task.remote()
        if self.config_ref is not None:
            ready, _ = ray.wait([self.config_ref], timeout=0)
            if ready:
                self.wire.send("config", config=self.value(ready[0], None))
                self.config_ref = None

    def collect_ends(self, now: float) -> None:
        """Replicas whose run ended: one last read of their output (when their actor still
        lives), then the ``ended`` event."""
        running = {t.run: t for t in self.tracked.values() if t.result is None}
        if running:
            ready, _ = ray.wait(list(running), num_returns=len(running), timeout=0)
            for ref in ready:
                tracked = running[ref]
                tracked.result, tracked.last_read = self.outcome(ref)
                tracked.final_until = now + FINAL_READ_WAIT
        for tracked in list(self.tracked.values()):
            if tracked.result is not None and now > tracked.final_until:
                self.end(tracked)

    def collect_reads(self, now: float) -> None:
        reading = {t.reading: t for t in self.tracked.values() if t.reading is not None}
        if reading:
            ready, _ = ray.wait(list(reading), num_returns=len(reading), timeout=0)
            for ref in ready:
                tracked = reading[ref]
                text, offset = self.value(ref, ("", tracked.offset))
                tracked.reading, tracked.offset = None, offset
                if text:
                    self.wire.send("output", id=tracked.id, text=text)
        for tracked in list(self.tracked.values()):
            if tracked.reading is not None:
                continue
            if tracked.result is None:
                if now - tracked.read_at >= READ_EVERY:
                    tracked.reading = tracked.actor.read.remote(tracked.offset)
                    tracked.read_at = now
            elif tracked.last_read:
                tracked.reading = tracked.actor.read.remote(tracked.offset)
                tracked.last_read = False
            else:
                self.end(tracked)

    def end(self, tracked: Tracked) -> None:
        if self.tracked.pop(tracked.id, None) is None:
            return
        assert tracked.result is not None
        self.wire.send("ended", id=tracked.id, **tracked.result)
        with contextlib.suppress(Exception):
            ray.kill(tracked.actor)

    def outcome(self, ref: Any) -> tuple[dict[str, Any], bool]:
        """How a replica's run ended, and whether its actor still lives to be read."""
        try:
            result: dict[str, Any] = ray.get(ref)
            return result, True
        except ray.exceptions.RayActorError as exc:
            return {"code": None, "reason": f"its Ray actor died: {first_lines(str(exc))}"}, False
        except ray.exceptions.RayError as exc:
            return {"code": None, "reason": f"Ray failed it: {first_lines(str(exc))}"}, False

    @staticmethod
    def value(ref: Any, default: Any) -> Any:
        try:
            return ray.get(ref)
        except ray.exceptions.RayError as exc:
            log.warning("a call to the cluster failed: %s", first_lines(str(exc)))
            return default

    def done_exiting(self) -> bool:
        if self.exiting_until is None:
            return False
        if not self.tracked:
            return True
        if time.monotonic() > self.exiting_until:
            for tracked in list(self.tracked.values()):
                with contextlib.suppress(Exception):
                    ray.kill(tracked.actor)
                tracked.result = {"code": None, "reason": "killed: the server is stopping"}
                self.end(tracked)
            return True
        return False


def nodes() -> list[dict[str, Any]]:
    return [
        {
            "id": node["NodeID"],
            "alive": bool(node["Alive"]),
            "address": node.get("NodeManagerAddress", ""),
            "labels": dict(node.get("Labels") or {}),
            "resources": dict(node.get("Resources") or {}),
        }
        for node in ray.nodes()
    ]


def tar_folder(folder: Path) -> bytes:
    """``folder``'s contents as a tar.gz (names relative to it), without bytecode."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            if "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    return buffer.getvalue()


def first_lines(text: str, limit: int = 400) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    joined = " ".join(lines[:3])
    return joined if len(joined) <= limit else joined[: limit - 3] + "..."


def read_commands(into: queue.Queue[dict[str, Any]]) -> None:
    for line in sys.stdin:
        if line.strip():
            into.put(json.loads(line))
    into.put({"op": "exit", "grace": 0, "eof": True})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchard.providers.ray_driver")
    parser.add_argument("--address", required=True)
    parser.add_argument("--namespace", default="orchard")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    wire = Wire()
    commands: queue.Queue[dict[str, Any]] = queue.Queue()
    threading.Thread(target=read_commands, args=(commands,), daemon=True).start()
    began = time.monotonic()
    ray.init(
        address=args.address,
        namespace=args.namespace,
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    took = time.monotonic() - began
    log.info("connected to %s in %.1f s", args.address, took)
    wire.send("hello", ray=ray.__version__, connect_s=round(took, 2))
    driver = Driver(wire, args.namespace)
    while not driver.done_exiting():
        deadline = time.monotonic() + TICK
        with contextlib.suppress(queue.Empty):
            while True:
                driver.handle(commands.get(timeout=max(0.0, deadline - time.monotonic())))
        driver.step()
    wire.send("bye")
    with contextlib.suppress(Exception):
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
