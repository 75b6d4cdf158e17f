"""What a round works on. :class:`World` is what observe hands decide: every orchestrated
deployment's plan, every replica and instance the orchestrator started, each deployment's
load, what the last round's apply could not do, the quotas, what decide remembers between rounds
(:class:`Memory`) and the clock's ``now``. :class:`Replica` is apply's record of a replica it
started (with its token and log file); the world shows it as a :class:`ReplicaFact`."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from orchard.ids import PoolKey, VersionRef
from orchard.orchestration.autoscale import LoadSample, ScaleState
from orchard.orchestration.resources import Resources
from orchard.orchestration.snapshot import DeploymentPlan, PoolPlan
from orchard.providers.base import ComputeShape, Instance
from orchard.providers.gpus import Device, GpuNeed
from orchard.quotas import Quotas, Usage

MAX_BACKOFF = 60.0
EVENTS_KEPT = 50  # per deployment, in memory, for `orchard deployment get`
NO_ROOM_BACKOFF = 10.0  # a nodepool whose provider had no instance for it is skipped this long

DeploymentKey = tuple[str, str]  # (user id, deployment id)
Load = tuple[int, int]  # items in flight, calls waiting


@dataclass(frozen=True)
class OrchestratorSettings:
    home: Path
    server: str  # the address replicas on this host connect to (maybe a Unix socket)
    network_server: str = ""  # host:port for replicas on other machines (default: server)
    find_links: tuple[str, ...] = ()  # how environments are built (for other machines)
    offline: bool = False
    tick: float = 1.0
    drain_grace: float = 30.0  # a stopped replica's time to finish what it holds
    server_gone_grace: float = 30.0  # replicas exit when the server is gone this long
    lost_grace: float = 15.0  # a ready replica without its stream this long is replaced
    link_socket: Path | None = None  # the local link's socket, which sandboxed replicas get
    egress: bool = True  # replicas may reach the network (a nodepool may still deny it)
    mounts: tuple[Path, ...] = ()  # host folders every replica may read
    quotas: Quotas = field(default_factory=Quotas)  # what each user's replicas may hold
    max_message_bytes: int = 64 << 20  # the server's message limit, which replicas' outputs fit


@dataclass
class Replica:
    """A replica apply started: what it runs, where, and what it holds (its token, its log)."""

    id: str
    deployment: DeploymentKey
    pool: PoolPlan
    version: VersionRef
    instance: Instance
    request: Resources
    exclusive: bool
    token: str
    log_path: Path
    started: float
    gpus: GpuNeed  # what it holds of its instance's GPUs
    devices: tuple[int, ...]  # which of them, as placement planned it
    log_offset: int = 0
    stopping: bool = False  # asked to drain; it is forgotten once it has ended


@dataclass(frozen=True)
class StartedInstance:
    """An instance apply started: its provider, its nodepool and what the provider said of it."""

    provider_id: str
    nodepool: PoolKey
    instance: Instance


@dataclass(frozen=True)
class ReplicaEnd:
    """A replica its provider reports no longer running."""

    exit_code: int | None
    reason: str  # the provider's words ("" : only the exit code is known)
    last_output: tuple[str, ...] = ()  # its last lines, for the event of a failed start


@dataclass(frozen=True)
class ReplicaFact:
    """A replica the orchestrator started, as this round observed it."""

    id: str
    deployment: DeploymentKey
    nodepool: PoolKey
    runner_id: str
    version: VersionRef
    instance_id: str
    request: Resources
    exclusive: bool = False  # its deployment disabled packing: its instance takes no other
    gpus: GpuNeed = field(default_factory=GpuNeed)
    devices: tuple[int, ...] = ()
    stopping: bool = False
    connected: bool = False  # it has a work stream to the server now
    ended: ReplicaEnd | None = None  # reported ended this round


@dataclass(frozen=True)
class InstanceFact:
    """An instance the orchestrator started, as this round observed it."""

    id: str
    nodepool: PoolKey
    shape: ComputeShape
    devices: tuple[Device, ...] | None = None  # as its provider reports them (None: it does not)
    lost: str = ""  # why it is gone (its provider said so this round); "": it is there


@dataclass(frozen=True)
class DeploymentMemory:
    """What decide remembers of one deployment between rounds."""

    scale: ScaleState = field(default_factory=ScaleState)
    samples: tuple[LoadSample, ...] = ()  # the autoscaler's window, oldest first
    failed_starts: int = 0  # in a row
    retry_at: float = 0.0  # no replica starts before (a failed start's backoff)
    blocked: str = ""  # why its plan let no replica start, as of the last round
    in_flight: int = 0  # its load as last read
    queued: int = 0


@dataclass(frozen=True)
class Memory:
    """What decide remembers between rounds (start from ``Memory()``)."""

    deployments: Mapping[DeploymentKey, DeploymentMemory] = field(default_factory=dict)
    ready: frozenset[str] = frozenset()  # replicas that have connected once
    lost_since: Mapping[str, float] = field(default_factory=dict)  # ready replica: stream gone

    def of(self, key: DeploymentKey) -> DeploymentMemory:
        return self.deployments.get(key) or DeploymentMemory()


@dataclass(frozen=True)
class World:
    """Everything one round's decide works on."""

    plans: tuple[DeploymentPlan, ...]
    replicas: tuple[ReplicaFact, ...] = ()
    instances: tuple[InstanceFact, ...] = ()
    # Each deployment's load, or why it could not be read (that deployment's failure alone).
    load: Mapping[DeploymentKey, Load | Exception] = field(default_factory=dict)
    no_room: Mapping[PoolKey, float] = field(default_factory=dict)  # nodepool: until when
    not_done: Mapping[DeploymentKey, str] = field(default_factory=dict)  # last apply: why not
    memory: Memory = field(default_factory=Memory)
    quotas: Quotas = field(default_factory=Quotas)
    lost_grace: float = 15.0
    now: float = 0.0
    rng: random.Random | None = field(default=None, compare=False)  # placement's RANDOM


def still_wanted(replica: ReplicaFact, plan: DeploymentPlan) -> bool:
    """Whether ``plan`` still runs ``replica``: same nodepool, runner and version."""
    pool = next((p for p in plan.pools if p.key == replica.nodepool), None)
    return (
        pool is not None
        and pool.runner_id == replica.runner_id
        and replica.version == (plan.version)
    )


def usage(request: Resources) -> Usage:
    """One replica of ``request``, as quotas count it."""
    return Usage(1, request.cpus, request.memory_bytes, request.accelerators)


def pool_name(pool: PoolPlan) -> str:
    return f"{pool.key.user_id}/{pool.key.compute_cluster_id}/{pool.key.nodepool_id}"
