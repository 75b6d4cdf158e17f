"""Node groups of a Ray cluster, from what its driver reports (pure): which nodes form a group,
the shape a nodepool on the group may promise, and what to ask the autoscaler for.

A group is the live nodes whose label ``orchard.nodepool`` (or, on clusters made by Ray's
autoscaler or KubeRay, ``ray.io/node-group``) has one value, plus any node type the autoscaler
declares even when none of its nodes is up. Its shape is what every live node offers (the
smallest of them), else what the node type declares.

GPUs (:func:`gpu_request`): a replica that needs one GPU and states its memory asks Ray for a
fraction of one (``num_gpus`` below 1: its memory over the device memory the nodepool's type
states), so such replicas share a device, as on the local provider; any other holds whole GPUs,
since Ray gives a fraction only of a single device.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchard.providers.base import ComputeShape, InstanceTypeInfo, NodepoolInfo
from orchard.providers.gpus import GpuNeed
from orchard.quantities import format_bytes, human_bytes

RAY_FRACTION = 10_000  # Ray counts fractional resources in steps of 1/10000
GROUP_LABEL = "orchard.nodepool"
NODE_GROUP_LABEL = "ray.io/node-group"  # set by Ray's autoscaler and KubeRay
MIB = 2**20


@dataclass(frozen=True)
class RayNode:
    id: str
    alive: bool
    address: str
    labels: Mapping[str, str]
    resources: Mapping[str, float]

    @classmethod
    def of(cls, report: Mapping[str, Any]) -> RayNode:
        return cls(
            str(report["id"]),
            bool(report["alive"]),
            str(report.get("address", "")),
            dict(report.get("labels") or {}),
            dict(report.get("resources") or {}),
        )

    def group(self) -> tuple[str, str] | None:
        """(label key, group name) of the node's group; None for a node in no group."""
        for key in (GROUP_LABEL, NODE_GROUP_LABEL):
            if self.labels.get(key):
                return key, self.labels[key]
        return None


@dataclass(frozen=True)
class NodeGroup:
    name: str
    label: str  # the label key whose value is ``name`` on the group's nodes
    shape: ComputeShape
    nodes: tuple[str, ...]  # live nodes, by id
    min_nodes: int | None = None  # the autoscaler's bounds, when it has the group
    max_nodes: int | None = None


def shape_of_resources(resources: Mapping[str, float], labels: Mapping[str, str]) -> ComputeShape:
    """A node's Ray resources as a shape: CPU, memory (whole MiB), GPUs and their type (the
    ``accelerator_type:NAME`` resource, or the ``ray.io/accelerator-type`` label)."""
    types = sorted(key.split(":", 1)[1] for key in resources if key.startswith("accelerator_type:"))
    if not types and labels.get("ray.io/accelerator-type"):
        types = [labels["ray.io/accelerator-type"]]
    gpus = int(resources.get("GPU", 0))
    return ComputeShape(
        cpus=float(resources.get("CPU", 0)),
        memory_bytes=int(resources.get("memory", 0)) // MIB * MIB,
        num_accelerators=gpus,
        accelerator_types=tuple(types) if gpus else (),
    )


def _smallest(shapes: list[ComputeShape]) -> ComputeShape:
    return ComputeShape(
        cpus=min(s.cpus for s in shapes),
        memory_bytes=min(s.memory_bytes for s in shapes),
        num_accelerators=min(s.num_accelerators for s in shapes),
        accelerator_types=tuple(sorted({t for s in shapes for t in s.accelerator_types})),
    )


def node_groups(nodes: list[RayNode], config: Mapping[str, Any] | None) -> dict[str, NodeGroup]:
    """The cluster's node groups: labelled live nodes, and the autoscaler's node types (from
    ``config``, the driver's ``config`` event) even when none of their nodes is up."""
    members: dict[str, tuple[str, list[RayNode]]] = {}
    for node in nodes:
        group = node.group() if node.alive else None
        if group is not None:
            members.setdefault(group[1], (group[0], []))[1].append(node)
    declared = {g["name"]: g for g in (config or {}).get("groups", [])}
    groups = {}
    for name in sorted(set(members) | set(declared)):
        label, live = members.get(name, (NODE_GROUP_LABEL, []))
        spec = declared.get(name)
        if live:
            shape = _smallest([shape_of_resources(n.resources, n.labels) for n in live])
        else:
            assert spec is not None
            shape = shape_of_resources(spec.get("resources", {}), spec.get("labels", {}))
        groups[name] = NodeGroup(
            name,
            label,
            shape,
            tuple(sorted(n.id for n in live)),
            None if spec is None else int(spec.get("min", 0)),
            None if spec is None else int(spec.get("max", 0)),
        )
    return groups


def instance_type_of(group: NodeGroup) -> InstanceTypeInfo:
    shape = group.shape
    parts = [f"{shape.cpus:g} CPU", human_bytes(shape.memory_bytes)]
    if shape.num_accelerators:
        parts.append(f"{shape.num_accelerators} x {'/'.join(shape.accelerator_types) or 'GPU'}")
    nodes = f"{len(group.nodes)} live node(s)"
    if group.max_nodes is not None:
        nodes += f", autoscaled {group.min_nodes}..{group.max_nodes}"
    return InstanceTypeInfo(
        id=group.name,
        description=f"a node of Ray group {group.name} ({', '.join(parts)}; {nodes})",
        shape=shape,
    )


def check_fit(shape: ComputeShape, group: NodeGroup) -> list[tuple[str, str]]:
    """Why an instance of ``shape`` is not a node of ``group``: what it promises must be what a
    node of the group offers, or less."""
    offer = group.shape
    problems = []
    if shape.cpus > offer.cpus:
        problems.append(
            (
                "cpu_limit",
                f"{shape.cpus:g} CPUs requested but a node of Ray group {group.name!r} has "
                f"{offer.cpus:g}; lower cpu_limit",
            )
        )
    if shape.memory_bytes > offer.memory_bytes:
        problems.append(
            (
                "cpu_memory",
                f"{human_bytes(shape.memory_bytes)} requested but a node of Ray group "
                f"{group.name!r} has {human_bytes(offer.memory_bytes)} "
                f"({format_bytes(offer.memory_bytes)}); lower cpu_memory",
            )
        )
    if shape.num_accelerators > offer.num_accelerators:
        problems.append(
            (
                "num_accelerators",
                f"{shape.num_accelerators} GPU(s) requested but a node of Ray group "
                f"{group.name!r} has {offer.num_accelerators}; lower num_accelerators",
            )
        )
    return problems


def autoscaler_request(
    pools: list[NodepoolInfo],
    held: Mapping[str, int],
    short: set[str],
    groups: Mapping[str, NodeGroup],
) -> tuple[list[dict[str, float]], list[dict[str, str]]]:
    """What to ask the autoscaler for: per nodepool, a node of its shape for each instance it
    should have (``min_instances``, or the instances it holds plus one it could not start),
    never more than ``max_instances``; each bundle selects the pool's group by its label."""
    bundles: list[dict[str, float]] = []
    selectors: list[dict[str, str]] = []
    for pool in sorted(pools, key=lambda p: p.pool):
        group = groups.get(pool.instance_type)
        if group is None:
            continue
        wanted = held.get(pool.pool, 0) + (1 if pool.pool in short else 0)
        count = min(pool.max_instances, max(pool.min_instances, wanted))
        bundle = {"CPU": pool.shape.cpus, "memory": float(pool.shape.memory_bytes)}
        if pool.shape.num_accelerators:
            bundle["GPU"] = float(pool.shape.num_accelerators)
        bundles += [bundle] * count
        selectors += [{group.label: group.name}] * count
    return bundles, selectors


def gpu_request(count: int, memory_bytes: int, device_memory_bytes: int) -> tuple[GpuNeed, float]:
    """What a replica of ``count`` GPUs of ``memory_bytes`` each holds of a node whose GPUs
    have ``device_memory_bytes`` (0: unknown), and the ``num_gpus`` that asks Ray for it: a
    share of one device, rounded up to Ray's step, when it needs one GPU and both memories are
    known; whole GPUs otherwise."""
    need = GpuNeed.of(count, memory_bytes)
    if not need.shared or count != 1 or not device_memory_bytes:
        return GpuNeed(count, memory_bytes), count
    steps = -(-memory_bytes * RAY_FRACTION // device_memory_bytes)
    return need, 1 if steps >= RAY_FRACTION else steps / RAY_FRACTION
