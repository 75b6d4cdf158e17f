"""The ``local`` provider: this host, the embedded default.

Its instance types are slices of the host's real CPUs, memory and GPUs; a nodepool on it may not
promise more than one host holds.

Orchestration. An instance is an envelope of this host: whole CPUs (``ceil(cpu_limit)`` of
them), an amount of memory and whole GPUs, held by no other instance, so that instances never
promise the same hardware twice. A replica is a process in its model version's environment,
held to its instance: its CPU affinity is the instance's CPUs, ``CUDA_VISIBLE_DEVICES`` names
the GPUs of the instance it was given (none for a CPU-only replica), and its resident memory
(with its children's) is watched against its share; a replica over it is killed and reported
with the reason. It runs in the provider's :class:`~orchard.providers.sandbox.Sandbox`, which
sees to it that it reaches nothing of the host but its jail (its own files, its GPUs' device
nodes, the link socket) and, when the server is root, runs it as its tenant's own uid; its
credential is written to its standard input, and its private folder is removed once it exits.
(A memory cgroup would enforce the memory bound in the kernel, but needs a delegated cgroup
tree that an unprivileged ``orchard serve`` rarely has; the watchdog works everywhere.)
Replicas write their output to one log file each, which the orchestrator turns into the
runner log.

GPUs. The instance's GPUs are assigned to its replicas by the rules of
:mod:`~orchard.providers.gpus`, for the need the launch carries (``ReplicaLaunch.gpus``): a
shared need (packing allowed and ``accelerator_memory`` stated) takes that much of each of its
devices, and others like it may share them while their memory together fits; a whole need (memory
unknown, or its deployment disables packing) holds its devices whole, and gets only devices that
nothing holds any of. What the replicas hold is rebuilt from the running ones
(:meth:`LocalProvider.devices`), so a replica's share is free again once its exit is polled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import itertools
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from orchard.providers.base import (
    ComputeShape,
    Instance,
    InstanceTypeInfo,
    NoCapacity,
    Provider,
    ReplicaLaunch,
    ReplicaStatus,
)
from orchard.providers.gpus import (
    Device,
    NoDevice,
    SharesDevices,
    assign_devices,
    take_devices,
)
from orchard.providers.inventory import HostInventory, host_inventory
from orchard.providers.sandbox import Jail, Sandbox, Unsandboxed, gpu_device_nodes
from orchard.quantities import format_bytes, human_bytes

log = logging.getLogger(__name__)

MIB = 2**20


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def accelerator_matches(pattern: str, name: str) -> bool:
    """``NVIDIA-*`` style wildcards and exact names, case-insensitive, spaces as hyphens."""

    def norm(text: str) -> str:
        return text.strip().upper().replace(" ", "-")

    return fnmatch.fnmatchcase(norm(name), norm(pattern))


@dataclass
class _Envelope:
    instance: Instance
    cpu_ids: tuple[int, ...]
    gpu_ids: tuple[int, ...]


@dataclass
class _Process:
    launch: ReplicaLaunch
    proc: subprocess.Popen[bytes]
    gpu_ids: tuple[int, ...]
    jail: Jail
    kill_at: float | None = None
    reason: str = ""


class LocalProvider(Provider, SharesDevices):
    id = "local"
    name = "This host"
    orchestrated = True

    def __init__(
        self,
        inventory: HostInventory | None = None,
        sandbox: Sandbox | None = None,
        dev: Path = Path("/dev"),
        unsandboxed_ok: bool = True,
    ) -> None:
        self._inventory = inventory
        self.sandbox = sandbox or Unsandboxed()
        self.dev = dev  # where the GPUs' device nodes are
        # Whether the operator chose to run replicas without a sandbox (--sandbox none), so
        # that a server with several users still starts them.
        self.unsandboxed_ok = unsandboxed_ok
        self._envelopes: dict[str, _Envelope] = {}
        self._replicas: dict[str, _Process] = {}
        self._numbers = itertools.count(1)

    @property
    def inventory(self) -> HostInventory:
        return self._inventory or host_inventory()

    def regions(self) -> list[str]:
        # "na" is the region the seed system's local-runner defaults use.
        return ["local", "na"]

    def instance_types(self, region: str) -> list[InstanceTypeInfo]:
        host = self.inventory
        sizes = sorted({n for n in (1, 2, 4, 8, 16, 32, 64, 128) if n < host.cpus} | {host.cpus})
        types = []
        for cpus in sizes:
            memory = host.memory_bytes * cpus // host.cpus // MIB * MIB
            types.append(
                InstanceTypeInfo(
                    id=f"local-cpu-{cpus}",
                    description=f"{cpus} CPU, {format_bytes(memory)} of this host",
                    shape=ComputeShape(cpus=cpus, memory_bytes=memory),
                )
            )
        by_name: dict[str, list[int]] = {}
        for gpu in host.gpus:
            by_name.setdefault(gpu.name, []).append(gpu.memory_bytes)
        for name, memories in by_name.items():
            count = 1
            while count <= len(memories):
                types.append(
                    InstanceTypeInfo(
                        id=f"local-gpu-{count}x-{_slug(name)}",
                        description=f"{count} x {name} with all CPUs and memory of this host",
                        shape=ComputeShape(
                            cpus=host.cpus,
                            memory_bytes=host.memory_bytes // MIB * MIB,
                            num_accelerators=count,
                            accelerator_types=(name,),
                            accelerator_memory_bytes=min(memories),
                        ),
                    )
                )
                count *= 2
        return types

    def check_shape(self, shape: ComputeShape) -> list[tuple[str, str]]:
        host = self.inventory
        problems: list[tuple[str, str]] = []
        if shape.cpus > host.cpus:
            problems.append(
                (
                    "cpu_limit",
                    f"{shape.cpus:g} CPUs requested but this host has {host.cpus}; lower cpu_limit",
                )
            )
        if shape.memory_bytes > host.memory_bytes:
            problems.append(
                (
                    "cpu_memory",
                    f"{human_bytes(shape.memory_bytes)} requested but "
                    f"this host has {human_bytes(host.memory_bytes)}; "
                    "lower cpu_memory",
                )
            )
        if shape.num_accelerators:
            problems.extend(self._check_accelerators(shape))
        return problems

    def _check_accelerators(self, shape: ComputeShape) -> list[tuple[str, str]]:
        gpus = self.inventory.gpus
        if not gpus:
            return [
                (
                    "num_accelerators",
                    f"{shape.num_accelerators} GPU(s) requested but "
                    "this host has no GPU; set num_accelerators: 0",
                )
            ]
        patterns = shape.accelerator_types or ("*",)
        usable = [g for g in gpus if any(accelerator_matches(p, g.name) for p in patterns)]
        names = ", ".join(sorted({g.name for g in gpus}))
        if not usable:
            return [
                (
                    "accelerator_type",
                    f"no GPU of this host matches {list(patterns)}; this host has: {names}",
                )
            ]
        fitting = [g for g in usable if g.memory_bytes >= shape.accelerator_memory_bytes]
        wanted = shape.accelerator_memory_bytes
        memory = f" with at least {human_bytes(wanted)}" if wanted else ""
        if len(fitting) < shape.num_accelerators:
            return [
                (
                    "num_accelerators",
                    f"{shape.num_accelerators} GPUs matching {list(patterns)}{memory} requested "
                    f"but this host has {len(fitting)} ({names}); lower num_accelerators",
                )
            ]
        return []

    # -- orchestration ---------------------------------------------------------------------

    def replica_problem(self, users: int) -> str:
        if users <= 1 or self.sandbox.isolates or self.unsandboxed_ok:
            return ""
        return (
            f"this server has {users} users and no sandbox for replicas (bubblewrap is missing "
            "or cannot make namespaces here), so it starts none: one user's model could read "
            "another's; install bubblewrap (apt-get install bubblewrap), or restart the server "
            "with --sandbox none to run replicas unsandboxed anyway"
        )

    def _cpu_ids(self) -> list[int]:
        """The CPUs instances are made of: the ones this server may run on, as many as the
        inventory counts."""
        usable = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        return (usable or list(range(self.inventory.cpus)))[: self.inventory.cpus]

    def start_instance(self, pool: str, shape: ComputeShape) -> Instance:
        host = self.inventory
        held_cpus = {c for e in self._envelopes.values() for c in e.cpu_ids}
        held_gpus = {g for e in self._envelopes.values() for g in e.gpu_ids}
        held_memory = sum(e.instance.shape.memory_bytes for e in self._envelopes.values())
        free_cpus = [c for c in self._cpu_ids() if c not in held_cpus]
        wanted_cpus = max(1, math.ceil(shape.cpus))
        pools = sorted({e.instance.pool for e in self._envelopes.values()})
        held_by = f" (held by instances of {', '.join(pools)})" if pools else ""
        if len(free_cpus) < wanted_cpus:
            raise NoCapacity(
                f"this host has {len(free_cpus)} free CPU(s) for an instance of "
                f"{wanted_cpus}{held_by}"
            )
        if held_memory + shape.memory_bytes > host.memory_bytes:
            raise NoCapacity(
                f"this host has {human_bytes(host.memory_bytes - held_memory)} of memory free "
                f"for an instance of {human_bytes(shape.memory_bytes)}{held_by}"
            )
        gpu_ids: tuple[int, ...] = ()
        if shape.num_accelerators:
            free_gpus = [
                g.index
                for g in host.gpus
                if g.index not in held_gpus
                and g.memory_bytes >= shape.accelerator_memory_bytes
                and any(accelerator_matches(p, g.name) for p in shape.accelerator_types or ("*",))
            ]
            if len(free_gpus) < shape.num_accelerators:
                raise NoCapacity(
                    f"this host has {len(free_gpus)} free matching GPU(s) for an instance of "
                    f"{shape.num_accelerators}{held_by}"
                )
            gpu_ids = tuple(free_gpus[: shape.num_accelerators])
        cpu_ids = tuple(free_cpus[:wanted_cpus])
        where = f"CPUs {','.join(map(str, cpu_ids))}" + (
            f", GPUs {','.join(map(str, gpu_ids))}" if gpu_ids else ""
        )
        instance = Instance(f"local-{next(self._numbers)}", pool, shape, where)
        self._envelopes[instance.id] = _Envelope(instance, cpu_ids, gpu_ids)
        return instance

    def stop_instance(self, instance_id: str) -> None:
        self._envelopes.pop(instance_id, None)

    def instances(self) -> list[Instance]:
        return [e.instance for e in self._envelopes.values()]

    def devices(self, instance_id: str) -> tuple[Device, ...]:
        envelope = self._envelopes.get(instance_id)
        if envelope is None:
            return ()
        memory = {g.index: g.memory_bytes for g in self.inventory.gpus}
        devices = tuple(Device(i, memory.get(i, 0)) for i in envelope.gpu_ids)
        for held in self._replicas.values():
            if held.launch.instance_id == instance_id:
                devices = take_devices(devices, held.gpu_ids, held.launch.gpus)
        return devices

    def start_replica(self, launch: ReplicaLaunch) -> None:
        envelope = self._envelopes.get(launch.instance_id)
        if envelope is None:
            raise NoCapacity(f"instance {launch.instance_id!r} is not running")
        try:
            gpu_ids = assign_devices(self.devices(envelope.instance.id), launch.gpus)
        except NoDevice as exc:
            raise NoCapacity(f"instance {envelope.instance.id}: {exc}") from None
        jail = self._jail(launch, envelope, gpu_ids)
        env = dict(launch.env)
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpu_ids))
        self.sandbox.prepare(jail)
        launch.log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        token, feed = os.pipe()  # the credential, on its standard input
        try:
            os.write(feed, launch.token.encode() + b"\n")
            os.close(feed)
            with open(launch.log_path, "ab") as out:
                proc = subprocess.Popen(
                    self.sandbox.command(launch.argv, jail),
                    env=env,
                    stdin=token,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a Ctrl-C at the server's terminal is the server's
                )
        except BaseException:
            shutil.rmtree(jail.private, ignore_errors=True)
            raise
        finally:
            os.close(token)
        with contextlib.suppress(OSError):  # it may already have exited
            os.sched_setaffinity(proc.pid, envelope.cpu_ids)
        self._replicas[launch.id] = _Process(launch, proc, gpu_ids, jail)

    def _jail(self, launch: ReplicaLaunch, envelope: _Envelope, gpu_ids: tuple[int, ...]) -> Jail:
        """The launch's jail with what this host adds: its GPUs' device nodes, its CPUs and the
        tenant's uid."""
        base = launch.jail or Jail(private=launch.log_path.with_suffix(".d"))
        nodes = {g.index: g.device_node for g in self.inventory.gpus}
        return dataclasses.replace(
            base,
            devices=gpu_device_nodes([nodes[i] for i in gpu_ids if i in nodes], self.dev),
            dev=self.dev,
            uid=self.sandbox.tenant_uid(launch.tenant or "-"),
            cpus=envelope.cpu_ids,
        )

    def stop_replica(self, replica_id: str, grace: float) -> None:
        held = self._replicas.get(replica_id)
        if held is None or held.kill_at is not None:
            return
        held.kill_at = time.monotonic() + grace
        with contextlib.suppress(ProcessLookupError, psutil.Error):
            os.kill(_runner_pid(held.proc.pid), signal.SIGTERM)

    def poll(self) -> list[ReplicaStatus]:
        statuses = []
        now = time.monotonic()
        for replica_id, held in list(self._replicas.items()):
            code = held.proc.poll()
            if code is None:
                self._watch(held, now)
                statuses.append(ReplicaStatus(replica_id, held.launch.instance_id, True))
                continue
            del self._replicas[replica_id]
            shutil.rmtree(held.jail.private, ignore_errors=True)
            statuses.append(
                ReplicaStatus(replica_id, held.launch.instance_id, False, code, held.reason)
            )
        return statuses

    def _watch(self, held: _Process, now: float) -> None:
        """Kill a replica past its drain grace, or over its memory share."""
        if held.kill_at is not None and now >= held.kill_at:
            held.reason = held.reason or "killed: it did not drain within its grace"
            _kill(held.proc)
            return
        used = _resident_bytes(held.proc.pid)
        if used > held.launch.memory_bytes > 0:
            if self.on_out_of_memory is not None:
                self.on_out_of_memory(held.launch.id, used, held.launch.memory_bytes)
            held.reason = (
                f"killed: it used {human_bytes(used)} of memory, over its limit of "
                f"{human_bytes(held.launch.memory_bytes)}; raise "
                "inference_compute_info.cpu_memory in the model's config.yaml"
            )
            _kill(held.proc)

    def shutdown(self, grace: float) -> None:
        for replica_id in list(self._replicas):
            self.stop_replica(replica_id, grace)
        deadline = time.monotonic() + grace
        for held in list(self._replicas.values()):
            try:
                held.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _kill(held.proc)
                held.proc.wait()
            shutil.rmtree(held.jail.private, ignore_errors=True)
        self._replicas.clear()
        self._envelopes.clear()


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # the replica and anything it started


def _runner_pid(pid: int) -> int:
    """The replica's own process under ``pid``: past the sandbox's processes (bubblewrap's
    monitor and its init), which do not pass a SIGTERM on."""
    process = psutil.Process(pid)
    while process.name() == "bwrap":
        children = process.children()
        if len(children) != 1:
            break
        process = children[0]
    return process.pid


def _resident_bytes(pid: int) -> int:
    try:
        root = psutil.Process(pid)
        family = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for member in family:
        with contextlib.suppress(psutil.Error):
            total += member.memory_info().rss
    return total
