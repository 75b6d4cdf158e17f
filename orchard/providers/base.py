"""The provider seam: where a compute cluster's instances and runners come from.

A provider is named by ``cloud_provider.id``. For the control plane it answers what it offers
(regions, instance types) and whether a nodepool's instance types can exist on it. For the
orchestrator it starts and stops *instances* (a nodepool's machines, or envelopes of one) and
runner *replicas* on them.

Contracts:

- every method returns fast and never blocks on the outside system for long: a replica that
  is still starting is reported as running, and whether it is ready is learnt from its
  connection to the server, not from the provider;
- capacity that is not there now raises :class:`NoCapacity` (the caller tries again later)
  instead of waiting for it;
- stopping is idempotent: stopping an unknown or already stopped replica or instance is a
  no-op; a stopped replica is asked to drain and is killed when its grace runs out;
- answers about capacity are facts about real machines, not promises;
- a provider that kills a replica for using more memory than its launch allows calls
  ``on_out_of_memory(replica id, bytes used, limit)`` first, on the thread that calls
  ``poll``, so that the calls the replica holds are not sent to another one to do the same.

A provider whose replicas run on other machines (``ray``) cannot use the argv of a
:class:`ReplicaLaunch` as it is (its paths are the server's): it rebuilds the replica from the
launch's :class:`ReplicaBundle` on the machine that runs it.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchard.providers.gpus import GpuNeed
from orchard.providers.sandbox import Jail
from orchard.quantities import format_bytes


@dataclass(frozen=True)
class ComputeShape:
    """An instance type's resources in plain numbers."""

    cpus: float
    memory_bytes: int
    num_accelerators: int = 0
    accelerator_types: tuple[str, ...] = ()
    accelerator_memory_bytes: int = 0

    def compute_info(self) -> dict[str, Any]:
        """The shape as ``ComputeInfo`` fields (quantity strings)."""
        info: dict[str, Any] = {
            "cpu_limit": f"{self.cpus:g}",
            "cpu_memory": format_bytes(self.memory_bytes),
            "num_accelerators": self.num_accelerators,
            "accelerator_type": list(self.accelerator_types),
        }
        if self.accelerator_memory_bytes:
            info["accelerator_memory"] = format_bytes(self.accelerator_memory_bytes)
        return info


@dataclass(frozen=True)
class InstanceTypeInfo:
    id: str
    description: str
    shape: ComputeShape
    price: str = "0"
    capacity_types: tuple[int, ...] = field(default=(1,))


class NoCapacity(Exception):
    """Not now: the provider has no room for what was asked; the reason says what is held."""


@dataclass(frozen=True)
class Instance:
    """One instance of a nodepool, as the provider started it."""

    id: str
    pool: str  # the nodepool's "user/cluster/nodepool"
    shape: ComputeShape
    where: str = ""  # for people: "CPUs 0-1 of this host", a node address...


@dataclass(frozen=True)
class ReplicaBundle:
    """What a replica needs on a machine that shares no disk with the server: the files behind
    its argv, how its environment was built, and the server's network address.

    The environment is built there with the same key, Python version and pins as the server's
    (``commands``: uv's steps, with the placeholders ``{uv}``, ``{python}``, ``{env}`` and
    ``{requirements}`` for what only that machine knows). Its token is the launch's ``token``;
    of the launch's environment only the model's declared variables are meant for another
    machine (``declared``)."""

    server: str  # host:port of the server's gRPC listener (never a Unix socket)
    package: Path  # the model version's package archive (.tar.gz)
    package_digest: str
    env_key: str
    python_version: str  # major.minor
    commands: tuple[tuple[str, ...], ...]
    runtime: Path  # the folder whose `orchard` package the replica imports
    args: tuple[str, ...]  # orchard.runners.serve's arguments other than --package and --server
    declared: tuple[tuple[str, str], ...] = ()  # the environment the model's config declares


@dataclass(frozen=True)
class ReplicaLaunch:
    """How to run one runner replica on an instance, and what it may use there.

    ``gpus`` is what it needs of its instance's GPUs: how many, the memory of each, and whether
    it may share them (``shared``), as the orchestrator decided from its deployment's packing and
    its model's ``accelerator_memory`` (:meth:`GpuNeed.of`). A provider assigns devices for that
    need as it is and never derives sharing from the memory alone: a replica of a deployment that
    disables packing holds whole devices even when its memory is stated.

    ``token`` is the replica's credential: a provider hands it over on the replica's standard
    input (its argv says ``--pat-stdin``), never in its argv or environment, and ``env`` is the
    replica's whole environment (:func:`~orchard.providers.sandbox.replica_environment`), never
    to be merged with the server's. ``jail`` is what a provider that sandboxes its replicas lets
    this one see (it adds the devices and the tenant's uid); ``tenant`` is the owning user."""

    id: str
    instance_id: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    memory_bytes: int
    log_path: Path
    gpus: GpuNeed = field(default_factory=GpuNeed)  # none by default
    cpus: float = 0.0  # what it requests of its instance (for providers that reserve it)
    bundle: ReplicaBundle | None = None
    token: str = ""
    tenant: str = ""
    jail: Jail | None = None


@dataclass(frozen=True)
class NodepoolInfo:
    """A nodepool the orchestrator runs replicas in, as its provider needs to know it."""

    pool: str  # "user/cluster/nodepool", as start_instance names it
    region: str
    instance_type: str  # the id of its (first) instance type
    shape: ComputeShape
    min_instances: int
    max_instances: int


@dataclass(frozen=True)
class ReplicaStatus:
    id: str
    instance_id: str
    running: bool
    exit_code: int | None = None
    reason: str = ""  # why the provider ended it, when it did (over its memory, ...)


class Provider(abc.ABC):
    id: str
    name: str
    orchestrated: bool = False  # whether the methods below are implemented
    # Told of a replica about to be killed for its memory (see the contracts); set by the server.
    on_out_of_memory: Callable[[str, int, int], None] | None = None

    @abc.abstractmethod
    def regions(self) -> list[str]:
        """Regions a compute cluster of this provider may name."""

    @abc.abstractmethod
    def instance_types(self, region: str) -> list[InstanceTypeInfo]:
        """Instance types offered in ``region`` (which the caller has checked)."""

    @abc.abstractmethod
    def check_shape(self, shape: ComputeShape) -> list[tuple[str, str]]:
        """Why ``shape`` cannot be an instance here: ``(field, reason with fix)`` pairs;
        empty when it fits."""

    def check_region(self, region: str) -> str:
        """Why a compute cluster cannot be made in ``region`` (with the fix); "" when it can."""
        regions = self.regions()
        if region in regions:
            return ""
        return (
            f"{region!r} is not a region of provider {self.id!r}; use one of: {', '.join(regions)}"
        )

    def check_instance_type(
        self, region: str, instance_type: str, shape: ComputeShape
    ) -> list[tuple[str, str]]:
        """Like :meth:`check_shape`, for a nodepool's instance type ``instance_type`` (an id
        that may or may not be in the catalogue) of ``shape`` in ``region``."""
        return self.check_shape(shape)

    def problem(self, pool: NodepoolInfo) -> str:
        """Why nodepool ``pool`` cannot run replicas now (its machines are unreachable, or
        fewer than its ``min_instances``), with the fix; "" when nothing is known to be
        wrong."""
        return ""

    def replica_problem(self, users: int) -> str:
        """Why this provider will not start replicas on a server with ``users`` users (its
        replicas would not be kept apart from each other), with the fix; "" when it will."""
        return ""

    def start(self) -> None:
        """Called once when the server starts (a provider may connect to what it drives)."""
        return None

    def close(self) -> None:
        """Release what the provider holds for itself (connections, helper processes); called
        once when the server stops, after :meth:`shutdown`."""
        return None

    # -- orchestration (providers that run replicas override all of these) -----------------

    def set_nodepools(self, pools: list[NodepoolInfo]) -> None:
        """The nodepools of this provider that deployments use, told every round before any
        instance is started (a provider with an autoscaler turns their ``min_instances`` and
        ``max_instances`` into requests)."""
        return None

    def start_instance(self, pool: str, shape: ComputeShape) -> Instance:
        """A new instance of ``shape`` for nodepool ``pool``; NoCapacity when none fits now."""
        raise NoCapacity(f"the {self.id!r} provider does not run replicas")

    def stop_instance(self, instance_id: str) -> None:
        """Release an instance; its replicas must have been stopped first."""
        return None

    def start_replica(self, launch: ReplicaLaunch) -> None:
        """Start a replica process on one of this provider's instances."""
        raise NoCapacity(f"the {self.id!r} provider does not run replicas")

    def stop_replica(self, replica_id: str, grace: float) -> None:
        """Ask a replica to drain; it is killed when ``grace`` seconds have passed."""
        return None

    def poll(self) -> list[ReplicaStatus]:
        """Every replica this provider started and has not forgotten, with its state. A
        replica reported as ended is forgotten after this call."""
        return []

    def instances(self) -> list[Instance]:
        return []

    def lost_instances(self) -> list[tuple[str, str]]:
        """Instances that are gone without being stopped (their machine died), each with why;
        each is reported once. Their replicas are reported ended by :meth:`poll`."""
        return []

    def shutdown(self, grace: float) -> None:
        """Stop every replica (drain, then kill after ``grace``) and release every instance;
        returns when they are gone."""
        return None
