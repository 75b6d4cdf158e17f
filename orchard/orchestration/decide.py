"""One deployment's decision in a round: a pure function of what the round observed.

:func:`decide` takes a :class:`Situation` (the deployment's plan, its running replicas, its load,
its autoscaling state, its failed-start backoff, its user's quota headroom, the nodepools as
placement sees them, and ``now``) and returns a :class:`Decision`: the deployment's new
autoscaling state and the actions, in order, for
:meth:`~orchard.orchestration.apply.Apply.carry_out`:

- :class:`Problem`: the deployment's problem now (an event when it changes);
- :class:`Event`: something to say in its events (the desired count changed);
- :class:`Stop`: a replica to drain, and why;
- :class:`Start`: a replica to start where placement put it (maybe on a new instance).

Rules, in order: a blocked deployment says why at once and starts nothing (the problem goes once
it is no longer blocked); the load sample joins the window and the autoscaler decides the count;
surplus replicas go, unconnected ones first (stopping them loses no capacity), then as
:func:`~orchard.orchestration.removal.choose_removals` says; missing ones, unless blocked or
backing off after a failed start, are capped by the user's headroom (the problem says so) and
placed by :func:`~orchard.orchestration.placement.place`; the first that cannot be placed says
why.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from orchard.orchestration.autoscale import (
    AutoscalePolicy,
    LoadSample,
    ScaleState,
    decide_replicas,
)
from orchard.orchestration.placement import Placement, place
from orchard.orchestration.removal import PlacedReplica, choose_removals
from orchard.orchestration.resources import NodepoolKey, NodepoolView
from orchard.orchestration.snapshot import DeploymentPlan
from orchard.quotas import Headroom, capped


@dataclass(frozen=True)
class RunningReplica:
    """A replica of the deployment that is not stopping, as decide sees it."""

    id: str
    nodepool: NodepoolKey
    instance_id: str
    connected: bool


@dataclass(frozen=True)
class Situation:
    plan: DeploymentPlan
    replicas: tuple[RunningReplica, ...]
    in_flight: int
    queued: int
    scale: ScaleState
    samples: tuple[LoadSample, ...]  # the earlier ones, oldest first
    retry_at: float  # no replica starts before (a failed start's backoff)
    room: Headroom  # what its user's quota lets it add (``Headroom(None)``: no limit)
    nodepools: tuple[NodepoolView, ...]
    now: float
    rng: random.Random | None = None  # placement's RANDOM choice (injected for tests)


@dataclass(frozen=True)
class Problem:
    text: str


@dataclass(frozen=True)
class Event:
    text: str


@dataclass(frozen=True)
class Stop:
    replica_id: str
    why: str


@dataclass(frozen=True)
class Start:
    placement: Placement  # placed: nodepool and instance (maybe a new one's placeholder id)


Action = Problem | Event | Stop | Start


@dataclass(frozen=True)
class Decision:
    scale: ScaleState
    samples: tuple[LoadSample, ...]  # the window to keep
    actions: tuple[Action, ...]


def decide(s: Situation) -> Decision:
    plan, now = s.plan, s.now
    policy = AutoscalePolicy.from_spec(plan.autoscale)
    samples = (*s.samples, LoadSample(now, s.in_flight, s.queued))
    samples = tuple(x for x in samples if x.at >= now - policy.traffic_history_seconds)
    ready = [r for r in s.replicas if r.connected]
    decision = decide_replicas(
        policy,
        plan.capacity,
        list(samples),
        s.scale,
        now,
        disabled=plan.disabled,
        waiting=s.queued > 0 and not ready,
    )
    actions: list[Action] = [Problem(plan.blocked)] if plan.blocked else []
    if decision.changed:
        actions.append(Event(f"desired replicas: {decision.reason}"))
    have, desired = len(s.replicas), decision.desired
    if have > desired:
        actions += _scale_down(s, have - desired)
    elif have < desired and not plan.blocked and now >= s.retry_at:
        actions += _scale_up(s, desired - have)
    return Decision(decision.state, samples, tuple(actions))


def _scale_down(s: Situation, count: int) -> list[Action]:
    # Replicas that are not connected go first: stopping them loses no capacity.
    chosen = [r.id for r in s.replicas if not r.connected][:count]
    rest = [
        PlacedReplica(r.id, r.nodepool, r.instance_id) for r in s.replicas if r.id not in chosen
    ]
    removals = choose_removals(count - len(chosen), rest, s.nodepools, s.plan.request)
    why = "the deployment needs fewer replicas"
    return [Stop(replica_id, why) for replica_id in (*chosen, *removals)]


def _scale_up(s: Situation, count: int) -> list[Action]:
    actions: list[Action] = []
    if s.room.replicas is not None and s.room.replicas < count:
        actions.append(Problem(capped(s.room, count)))
        count = s.room.replicas
    if count == 0:
        return actions
    result = place(
        s.plan.id,
        s.plan.request,
        count,
        s.nodepools,
        scheduling_choice=s.plan.scheduling_choice,
        disable_packing=s.plan.autoscale.disable_packing,
        rng=s.rng,
    )
    actions += [Start(p) for p in result.placed]
    actions += [Problem(p.reason) for p in result.unplaced[:1]]
    return actions
