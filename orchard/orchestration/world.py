"""What the orchestrator knows between rounds: its settings, the replicas it started and each
deployment's state (autoscaling, failed starts, load, recent events)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from orchard.orchestration.autoscale import LoadSample, ScaleState
from orchard.orchestration.resources import Resources
from orchard.orchestration.snapshot import DeploymentPlan, PoolPlan
from orchard.providers.base import Instance
from orchard.providers.gpus import GpuNeed
from orchard.quotas import Quotas, Usage
from orchard.services.models import VersionRef

MAX_BACKOFF = 60.0
EVENTS_KEPT = 50  # per deployment, in memory, for `orchard deployment get`
NO_ROOM_BACKOFF = 10.0  # a nodepool whose provider had no instance for it is skipped this long


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
    id: str
    deployment: tuple[str, str]
    plan_pool: PoolPlan
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
    ready: bool = False
    connected: bool = False
    lost_since: float | None = None
    stopping: bool = False


@dataclass
class DeploymentState:
    scale: ScaleState = field(default_factory=ScaleState)
    samples: deque[LoadSample] = field(default_factory=deque)
    failures: int = 0
    retry_at: float = 0.0
    last_problem: str = ""
    blocked: str = ""  # why its plan let no replica start, as of the last round
    in_flight: int = 0
    queued: int = 0
    events: deque[str] = field(default_factory=lambda: deque(maxlen=EVENTS_KEPT))


def still_wanted(replica: Replica, plan: DeploymentPlan) -> bool:
    """Whether ``plan`` still runs ``replica``: same nodepool, runner and version."""
    pool = next((p for p in plan.pools if p.key == replica.plan_pool.key), None)
    return (
        pool is not None
        and pool.runner_id == replica.plan_pool.runner_id
        and replica.version == plan.version
    )


def usage(request: Resources) -> Usage:
    """One replica of ``request``, as quotas count it."""
    return Usage(1, request.cpus, request.memory_bytes, request.accelerators)


def pool_name(pool: PoolPlan) -> str:
    return f"{pool.key.user_id}/{pool.key.compute_cluster_id}/{pool.key.nodepool_id}"
