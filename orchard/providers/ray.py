"""The ``ray`` provider: runner replicas as actors on the nodes of existing Ray clusters.

A compute cluster with ``cloud_provider.id: ray`` names, in ``region``, a Ray cluster this server
was configured with (``orchard serve --ray-cluster NAME=ADDRESS``, or a settings file); the
address and any token stay on the server. What maps to what:

- region: a configured Ray cluster (:class:`RayClusterConfig`);
- instance type: a *node group* of that cluster, the nodes whose label ``orchard.nodepool`` (or,
  on clusters made by Ray's autoscaler or KubeRay, ``ray.io/node-group``) has one value; its
  shape is what every live node of the group offers (the smallest of them), or what the
  autoscaler's node type declares when none is up;
- instance: one Ray node of the group, held by one nodepool at a time;
- replica: a detached, named Ray actor (:mod:`~orchard.providers.ray_replica`) with the model's
  CPUs, GPUs and memory as resources, the group's label as its label selector and its instance's
  node as a hard node affinity, which runs ``orchard.runners.serve`` on that node; packing is
  the orchestrator's (``disable_packing`` gives each replica a node of its own). A replica whose
  launch's GPU need is shared (packing allowed and ``accelerator_memory`` stated) and of one GPU
  asks for a fraction of a GPU (its memory over the GPU memory the nodepool's type states), so
  several share one (:func:`~orchard.providers.ray_groups.gpu_request`); every other replica,
  one of a deployment that disables packing included, asks for whole GPUs and holds them whole
  (:func:`ray_gpus`). Which GPUs of its node each replica holds is kept by the rules of
  :mod:`~orchard.providers.gpus` and told to placement (:meth:`RayProvider.devices`); a replica
  they do not fit is refused before Ray is asked.

Ray is driven from a child process per cluster (:mod:`~orchard.providers.ray_driver`, kept
running by :mod:`~orchard.providers.ray_link`): this module never imports Ray, and every method
returns at once from what the driver last reported. A driver that stops answering, or exits,
marks its cluster unreachable (its nodepools' status is ERROR with the reason) and is started
again with backoff; the actors it ran are adopted again when it is back. Node groups and what
they offer are :mod:`~orchard.providers.ray_groups`. A node that dies loses its instance
(:meth:`~RayProvider.lost_instances`) and its replicas (reported ended with Ray's reason), which
the orchestrator replaces on the pool's other nodes.

``min_instances`` and ``max_instances`` become requests to the cluster's autoscaler when it has
one (a bundle of the nodepool's shape per node wanted, selected by the group's label); without
one, missing nodes are a nodepool status that says how to add them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from orchard import errors
from orchard.providers.base import (
    ComputeShape,
    Instance,
    InstanceTypeInfo,
    NoCapacity,
    NodepoolInfo,
    Provider,
    ReplicaBundle,
    ReplicaLaunch,
    ReplicaStatus,
)
from orchard.providers.gpus import (
    Device,
    GpuNeed,
    NoDevice,
    SharesDevices,
    assign_devices,
    devices_of,
    take_devices,
)
from orchard.providers.ray_groups import (
    GROUP_LABEL,
    NodeGroup,
    RayNode,
    autoscaler_request,
    check_fit,
    gpu_request,
    instance_type_of,
    node_groups,
)
from orchard.providers.ray_link import DriverLink, Event, Link, RayClusterConfig

__all__ = ["RayClusterConfig", "RayProvider", "cluster_option", "clusters_file"]

log = logging.getLogger(__name__)

INSTALL = "the ray provider needs Ray on this server: pip install 'orchard[ray]'"
CONNECT_WAIT = 20.0  # how long a control-plane call waits for a cluster's first report
ACTOR_EXIT_AFTER = 60.0  # an actor whose runner ended and that nobody killed leaves then


def cluster_option(text: str) -> RayClusterConfig:
    """``NAME=ADDRESS`` (``orchard serve --ray-cluster``) as a cluster; ValueError when not."""
    name, sep, address = text.partition("=")
    if not sep or not name.strip() or not address.strip():
        raise ValueError(f"{text!r} is not NAME=ADDRESS, e.g. prod=ray://10.0.0.5:10001")
    return RayClusterConfig(name.strip(), address.strip())


def clusters_file(path: Path) -> list[RayClusterConfig]:
    """The clusters of a settings file (YAML)::

        clusters:
          prod:
            address: ray://10.0.0.5:10001
            auth_token_file: /etc/orchard/ray-prod.token   # optional
            namespace: orchard                             # optional

    ValueError naming the bad entry."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    entries = data.get("clusters") if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        raise ValueError(f"{path}: expected a mapping `clusters: {{NAME: {{address: ...}}}}`")
    known = {"address", "auth_token_file", "namespace"}
    clusters = []
    for name, entry in entries.items():
        if not isinstance(entry, dict) or not entry.get("address"):
            raise ValueError(f"{path}: clusters.{name} needs an address")
        unknown = set(entry) - known
        if unknown:
            raise ValueError(
                f"{path}: clusters.{name}: unknown field(s) {', '.join(sorted(unknown))}; "
                f"known: {', '.join(sorted(known))}"
            )
        token = entry.get("auth_token_file")
        clusters.append(
            RayClusterConfig(
                str(name),
                str(entry["address"]),
                Path(token).expanduser() if token else None,
                str(entry.get("namespace") or "orchard"),
            )
        )
    return clusters


def ray_installed() -> bool:
    return importlib.util.find_spec("ray") is not None


def ray_gpus(need: GpuNeed, device_memory_bytes: int) -> tuple[GpuNeed, float]:
    """What a replica of GPU need ``need`` holds of a node whose GPUs have
    ``device_memory_bytes`` (0: unknown), and the ``num_gpus`` that asks Ray for it. A whole
    need asks for ``need.count`` whole GPUs and holds them whole, whatever memory it states; a
    shared one asks as :func:`~orchard.providers.ray_groups.gpu_request` says (a fraction of one
    GPU when it can, whole GPUs otherwise)."""
    if not need.shared:
        return need, need.count
    return gpu_request(need.count, need.memory_bytes, device_memory_bytes)


@dataclass
class _Cluster:
    config: RayClusterConfig
    link: Link
    nodes: list[RayNode] | None = None  # the last report (None before the first)
    config_report: Mapping[str, Any] | None = None  # the autoscaler's node groups, if any
    ready: threading.Event = field(default_factory=threading.Event)
    demand: tuple[Any, ...] = ()

    def groups(self) -> dict[str, NodeGroup]:
        return node_groups(self.nodes or [], self.config_report)

    @property
    def autoscaled(self) -> bool:
        return self.config_report is not None


@dataclass
class _Held:
    instance: Instance
    cluster: str
    node: str
    label: str
    group: str


@dataclass
class _Replica:
    launch: ReplicaLaunch
    cluster: str
    gpus: GpuNeed  # what it holds of its node's GPUs
    devices: tuple[int, ...]  # which of them
    stopping: float | None = None  # the grace, once asked to stop
    ended: ReplicaStatus | None = None


class RayProvider(Provider, SharesDevices):
    id = "ray"
    name = "Ray clusters"
    orchestrated = True

    def __init__(
        self,
        clusters: list[RayClusterConfig],
        home: Path,
        link_factory: Callable[[RayClusterConfig, Callable[[Event], None]], Link] | None = None,
        installed: bool | None = None,
    ) -> None:
        self._configs = {c.name: c for c in clusters}
        self._logs = home / "logs"
        self._link_factory = link_factory or (
            lambda config, on_event: DriverLink(config, self._logs, on_event)
        )
        self._installed = ray_installed() if installed is None else installed
        self._lock = threading.RLock()
        self._clusters: dict[str, _Cluster] = {}
        self._pools: dict[str, NodepoolInfo] = {}
        self._short: set[str] = set()
        self._instances: dict[str, _Held] = {}
        self._replicas: dict[str, _Replica] = {}
        self._lost: list[tuple[str, str]] = []
        self._closed = False

    def start(self) -> None:
        """Connect to every configured cluster now, so that the first user of one does not
        wait for it."""
        if self._installed:
            for name in self._configs:
                self._cluster(name)

    # -- catalogue and checks ----------------------------------------------------------------

    def regions(self) -> list[str]:
        return sorted(self._configs)

    def check_region(self, region: str) -> str:
        if not self._installed:
            return INSTALL
        if region in self._configs:
            return ""
        known = ", ".join(self.regions()) or "none"
        return (
            f"{region!r} is not a Ray cluster this server knows (it knows: {known}); "
            f"start it with `orchard serve --ray-cluster {region or 'NAME'}=ray://HEAD:10001`"
        )

    def instance_types(self, region: str) -> list[InstanceTypeInfo]:
        cluster = self._connected(region)
        return [instance_type_of(g) for g in cluster.groups().values()]

    def check_shape(self, shape: ComputeShape) -> list[tuple[str, str]]:
        return []  # only a node group can say (check_instance_type)

    def check_instance_type(
        self, region: str, instance_type: str, shape: ComputeShape
    ) -> list[tuple[str, str]]:
        try:
            groups = self._connected(region).groups()
        except errors.ProviderUnavailable as exc:
            return [("id", exc.message)]
        group = groups.get(instance_type)
        if group is None:
            known = ", ".join(groups) or "none"
            return [
                (
                    "id",
                    f"{instance_type!r} is not a node group of Ray cluster {region!r} (its "
                    f"groups: {known}); label its nodes with `ray start --labels "
                    f"{GROUP_LABEL}={instance_type}` or use one of its groups",
                )
            ]
        return check_fit(shape, group)

    def problem(self, pool: NodepoolInfo) -> str:
        if pool.region not in self._configs or not self._installed:
            return self.check_region(pool.region)
        cluster = self._cluster(pool.region)
        if cluster.link.problem:
            return cluster.link.problem
        if cluster.nodes is None:
            return ""
        return self._missing_nodes(cluster, pool)

    def _missing_nodes(self, cluster: _Cluster, info: NodepoolInfo) -> str:
        group = cluster.groups().get(info.instance_type)
        live = len(group.nodes) if group is not None else 0
        if cluster.autoscaled or live >= info.min_instances:
            return ""
        return (
            f"nodepool {info.pool} wants {info.min_instances} node(s) of Ray group "
            f"{info.instance_type!r} but the Ray cluster {cluster.config.name!r} has {live} and "
            f"no autoscaler to add more; start one with `ray start --address=... --labels "
            f"{GROUP_LABEL}={info.instance_type}`"
        )

    # -- clusters ---------------------------------------------------------------------------

    def _cluster(self, name: str) -> _Cluster:
        with self._lock:
            cluster = self._clusters.get(name)
            if cluster is None:
                if self._closed:
                    raise errors.ProviderUnavailable("the server is stopping")
                config = self._configs[name]
                link = self._link_factory(config, lambda event: self._on_event(name, event))
                cluster = self._clusters[name] = _Cluster(config, link)
                link.start()
            return cluster

    def _connected(self, region: str) -> _Cluster:
        """The cluster, once it has reported its nodes (waiting up to CONNECT_WAIT; for the
        control plane's calls, which run in worker threads)."""
        problem = self.check_region(region)
        if problem:
            raise errors.ProviderUnavailable(problem)
        cluster = self._cluster(region)
        cluster.ready.wait(CONNECT_WAIT)
        if cluster.nodes is None or cluster.link.problem:
            raise errors.ProviderUnavailable(
                cluster.link.problem
                or f"Orchard is still connecting to the Ray cluster {region!r} at "
                f"{cluster.config.address} (no answer within {CONNECT_WAIT:g} s; it keeps "
                "trying); try again shortly, and check that the cluster is up"
            )
        return cluster

    def _on_event(self, name: str, event: Event) -> None:
        kind = event.get("event")
        with self._lock:
            cluster = self._clusters.get(name)
            if cluster is None:
                return
            if kind == "spawned":
                self._resume(name, cluster)
            elif kind == "nodes":
                cluster.nodes = [RayNode.of(n) for n in event["nodes"]]
                self._forget_dead_nodes(name, cluster.nodes)
                cluster.ready.set()
            elif kind == "config":
                cluster.config_report = event.get("config")
            elif kind == "output":
                self._write_output(event["id"], event["text"])
            elif kind == "ended":
                self._ended(event)
            elif kind == "down":
                cluster.ready.set()  # waiters learn the problem instead of waiting on

    def _resume(self, name: str, cluster: _Cluster) -> None:
        """A new driver: it adopts the replicas still counted here, then gets the stops it
        may have missed."""
        mine = {rid: r for rid, r in self._replicas.items() if r.cluster == name and not r.ended}
        cluster.link.send({"op": "adopt", "ids": sorted(mine)})
        for replica_id, replica in mine.items():
            if replica.stopping is not None:
                cluster.link.send({"op": "stop", "id": replica_id, "grace": replica.stopping})
        cluster.demand = ()

    def _forget_dead_nodes(self, name: str, nodes: list[RayNode]) -> None:
        alive = {n.id for n in nodes if n.alive}
        for instance_id, held in list(self._instances.items()):
            if held.cluster == name and held.node not in alive:
                del self._instances[instance_id]
                self._lost.append(
                    (instance_id, f"Ray node {held.node[:12]} of group {held.group} is gone")
                )

    def _write_output(self, replica_id: str, text: str) -> None:
        replica = self._replicas.get(replica_id)
        if replica is None:
            return
        path = replica.launch.log_path
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as out:
                out.write(text)

    def _ended(self, event: Event) -> None:
        replica = self._replicas.get(event["id"])
        if replica is None or replica.ended is not None:
            return
        code = event.get("code")
        replica.ended = ReplicaStatus(
            replica.launch.id,
            replica.launch.instance_id,
            False,
            None if code is None else int(code),
            str(event.get("reason") or ""),
        )

    # -- orchestration ------------------------------------------------------------------------

    def set_nodepools(self, pools: list[NodepoolInfo]) -> None:
        with self._lock:
            self._pools = {p.pool: p for p in pools}
            self._short &= set(self._pools)
            for region in sorted({p.region for p in pools if p.region in self._configs}):
                if self._installed:
                    self._ask_autoscaler(region, self._cluster(region))

    def _ask_autoscaler(self, region: str, cluster: _Cluster) -> None:
        if not cluster.autoscaled or cluster.link.problem:
            return
        pools = [p for p in self._pools.values() if p.region == region]
        held: dict[str, int] = {}
        for h in self._instances.values():
            held[h.instance.pool] = held.get(h.instance.pool, 0) + 1
        bundles, selectors = autoscaler_request(pools, held, self._short, cluster.groups())
        demand = (json.dumps(bundles, sort_keys=True), json.dumps(selectors, sort_keys=True))
        if demand != cluster.demand:
            cluster.demand = demand
            cluster.link.send({"op": "demand", "bundles": bundles, "selectors": selectors})

    def start_instance(self, pool: str, shape: ComputeShape) -> Instance:
        with self._lock:
            info = self._pools.get(pool)
            if info is None:
                raise NoCapacity(f"nodepool {pool} is not one the orchestrator runs yet")
            cluster = self._usable(info.region)
            group = cluster.groups().get(info.instance_type)
            if group is None:
                raise NoCapacity(
                    f"the Ray cluster {info.region!r} has no node group {info.instance_type!r} "
                    f"now; label nodes with `ray start --labels {GROUP_LABEL}={info.instance_type}`"
                )
            taken = {h.node for h in self._instances.values() if h.cluster == info.region}
            free = [node for node in group.nodes if node not in taken]
            if not free:
                self._short.add(pool)
                self._ask_autoscaler(info.region, cluster)
                raise NoCapacity(self._no_free_node(cluster, group))
            self._short.discard(pool)
            node = free[0]
            address = next((n.address for n in cluster.nodes or [] if n.id == node), "")
            instance = Instance(
                f"ray-{info.region}-{node[:12]}",
                pool,
                shape,
                f"Ray node {node[:12]} ({address}) of group {group.name} in {info.region}",
            )
            self._instances[instance.id] = _Held(
                instance, info.region, node, group.label, group.name
            )
            self._ask_autoscaler(info.region, cluster)
            return instance

    def _no_free_node(self, cluster: _Cluster, group: NodeGroup) -> str:
        held = f"all {len(group.nodes)} live node(s) of Ray group {group.name!r} hold instances"
        if cluster.autoscaled:
            return f"{held}; asked the Ray autoscaler for another"
        return (
            f"{held} and the Ray cluster {cluster.config.name!r} has no autoscaler; start "
            f"another node with `ray start --address=... --labels {GROUP_LABEL}={group.name}`"
        )

    def _usable(self, region: str) -> _Cluster:
        if region not in self._configs or not self._installed:
            raise NoCapacity(self.check_region(region))
        cluster = self._cluster(region)
        if cluster.link.problem:
            raise NoCapacity(cluster.link.problem)
        if cluster.nodes is None:
            raise NoCapacity(f"the Ray cluster {region!r} has not reported its nodes yet")
        return cluster

    def stop_instance(self, instance_id: str) -> None:
        with self._lock:
            held = self._instances.pop(instance_id, None)
            if held is not None and held.cluster in self._clusters:
                self._ask_autoscaler(held.cluster, self._clusters[held.cluster])

    def instances(self) -> list[Instance]:
        with self._lock:
            return [h.instance for h in self._instances.values()]

    def lost_instances(self) -> list[tuple[str, str]]:
        with self._lock:
            lost, self._lost = self._lost, []
            return lost

    def devices(self, instance_id: str) -> tuple[Device, ...]:
        with self._lock:
            held = self._instances.get(instance_id)
            if held is None:
                return ()
            shape = held.instance.shape
            devices = devices_of(shape.num_accelerators, shape.accelerator_memory_bytes)
            for replica in self._replicas.values():
                if replica.launch.instance_id == instance_id and replica.ended is None:
                    devices = take_devices(devices, replica.devices, replica.gpus)
            return devices

    def start_replica(self, launch: ReplicaLaunch) -> None:
        with self._lock:
            held = self._instances.get(launch.instance_id)
            if held is None:
                raise NoCapacity(f"instance {launch.instance_id!r} is not running")
            cluster = self._usable(held.cluster)
            bundle = launch.bundle
            if bundle is None:
                raise NoCapacity(f"replica {launch.id} has nothing to run on another machine")
            need, num_gpus = ray_gpus(launch.gpus, held.instance.shape.accelerator_memory_bytes)
            try:
                devices = assign_devices(self.devices(held.instance.id), need)
            except NoDevice as exc:
                raise NoCapacity(f"instance {held.instance.id}: {exc}") from None
            self._replicas[launch.id] = _Replica(launch, held.cluster, need, devices)
            cluster.link.send(self._start_command(launch, bundle, held, num_gpus))

    @staticmethod
    def _start_command(
        launch: ReplicaLaunch, bundle: ReplicaBundle, held: _Held, num_gpus: float
    ) -> dict[str, Any]:
        spec = {
            "id": launch.id,
            "server": bundle.server,
            "args": list(bundle.args),
            "token": launch.token,
            "declared": [list(pair) for pair in bundle.declared],
            "package_digest": bundle.package_digest,
            "runtime_version": bundle.runtime.name,
            "env_key": bundle.env_key,
            "python_version": bundle.python_version,
            "commands": [list(c) for c in bundle.commands],
            "exit_after": ACTOR_EXIT_AFTER,
        }
        return {
            "op": "start",
            "spec": spec,
            "node": held.node,
            "selector": {held.label: held.group},
            "resources": {
                "num_cpus": launch.cpus,
                "num_gpus": num_gpus,
                "memory": launch.memory_bytes,
            },
            "package": str(bundle.package),
            "runtime": str(bundle.runtime),
        }

    def stop_replica(self, replica_id: str, grace: float) -> None:
        with self._lock:
            replica = self._replicas.get(replica_id)
            if replica is None or replica.stopping is not None or replica.ended is not None:
                return
            replica.stopping = grace
            cluster = self._clusters.get(replica.cluster)
            if cluster is not None:
                cluster.link.send({"op": "stop", "id": replica_id, "grace": grace})

    def poll(self) -> list[ReplicaStatus]:
        with self._lock:
            statuses = []
            for replica_id, replica in list(self._replicas.items()):
                if replica.ended is not None:
                    statuses.append(replica.ended)
                    del self._replicas[replica_id]
                else:
                    launch = replica.launch
                    statuses.append(ReplicaStatus(launch.id, launch.instance_id, True))
            return statuses

    def shutdown(self, grace: float) -> None:
        with self._lock:
            clusters = list(self._clusters.values())
        for cluster in clusters:
            cluster.link.close(grace)
        with self._lock:
            self._clusters.clear()
            self._replicas.clear()
            self._instances.clear()

    def close(self) -> None:
        self.shutdown(0.0)
        self._closed = True
