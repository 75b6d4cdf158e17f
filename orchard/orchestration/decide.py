"""One round's decision: a pure function of the world the round observed.

:func:`decide` takes the :class:`~orchard.orchestration.world.World` (every orchestrated
deployment's plan, every replica and instance the orchestrator started as this round saw them,
each deployment's load, what the last round's apply could not do, the quotas, what decide
remembered from the last round, ``now``) and returns a :class:`Decision`: the
:mod:`~orchard.orchestration.actions` for apply, in order, and the memory for the next round.
It does no I/O; the same world gives the same decision (RANDOM placement draws from the
world's ``rng``).

In order:

1. **What happened.** A lost instance is dropped. An ended replica is forgotten: if it had
   connected it is replaced (an event says so); if it never had, it is a failed start, and its
   deployment backs off 1, 2, 4 ... 60 s (:data:`~orchard.orchestration.world.MAX_BACKOFF`),
   its last output in the event. A replica's first connection makes it ready (its deployment's
   failed starts and problem go); a ready replica without its stream for ``lost_grace`` is stopped.
2. **What no longer runs.** A replica whose deployment is gone, or no longer runs it there
   (another nodepool, runner record or version), is stopped.
3. **Each deployment**, in the plans' order (what one raises is its failure alone:
   :class:`~orchard.orchestration.actions.CannotDecide`): a blocked one says why and starts nothing
   (its problem goes once it is no longer blocked); what the last round's apply could not do is
   its problem; the load joins the autoscaler's window and the autoscaler decides the count;
   surplus replicas go, unconnected ones first, then as
   :func:`~orchard.orchestration.removal.choose_removals` says; missing ones, unless blocked or
   backing off, are capped by the user's quota headroom and placed by
   :func:`~orchard.orchestration.placement.place`. Headroom and room are accounted across the
   round: what one deployment starts, the next one's quota and placement see
   (:class:`~orchard.orchestration.capacity.Capacity`).
4. **Idle instances** (no replica, draining ones included, and none about to start) are
   released down to each nodepool's ``min_instances``
   (:func:`~orchard.orchestration.removal.spare_instances`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from orchard.ids import PoolKey
from orchard.orchestration.actions import (
    Action,
    CannotDecide,
    Drop,
    Event,
    Forget,
    Problem,
    Release,
    Solved,
    Start,
    Stop,
)
from orchard.orchestration.autoscale import (
    AutoscaleDecision,
    AutoscalePolicy,
    LoadSample,
    decide_replicas,
)
from orchard.orchestration.capacity import Capacity
from orchard.orchestration.placement import place
from orchard.orchestration.removal import PlacedReplica, choose_removals, spare_instances
from orchard.orchestration.snapshot import DeploymentPlan
from orchard.orchestration.world import (
    MAX_BACKOFF,
    DeploymentKey,
    DeploymentMemory,
    Memory,
    ReplicaFact,
    World,
    still_wanted,
    usage,
)
from orchard.quotas import Headroom, Usage, capped, headroom, total

LOST_STREAM = "it lost its stream to the server and did not reconnect"
UNWANTED = "its deployment no longer runs it here"
FEWER = "the deployment needs fewer replicas"


@dataclass(frozen=True)
class Decision:
    actions: tuple[Action, ...]
    memory: Memory  # for the next round's world


def decide(world: World) -> Decision:
    """The actions of one round, in order, and what to remember; see the module docstring."""
    round_ = _Round(world)
    round_.take_in()
    round_.stop_unwanted()
    for plan in world.plans:
        round_.deployment_apart(plan)
    round_.release_idle()
    return round_.decision()


class _Round:
    """One call of :func:`decide`: the world, and what is decided so far."""

    def __init__(self, world: World) -> None:
        self.world, self.now = world, world.now
        self.actions: list[Action] = []
        self.live = [r for r in world.replicas if r.ended is None]
        self.stopping = {r.id for r in self.live if r.stopping}
        self.ready = set(world.memory.ready) & {r.id for r in self.live}
        away = world.memory.lost_since
        self.lost_since = {r.id: away[r.id] for r in self.live if r.id in away}
        self.memory = dict(world.memory.deployments)
        self.capacity = Capacity(world)
        self.added: dict[str, list[Usage]] = {}  # user: the replicas this round starts

    def decision(self) -> Decision:
        keys = {plan.key for plan in self.world.plans}
        memory = Memory(
            {k: m for k, m in self.memory.items() if k in keys},
            frozenset(self.ready),
            self.lost_since,
        )
        return Decision(tuple(self.actions), memory)

    def memory_of(self, key: DeploymentKey) -> DeploymentMemory:
        return self.memory.get(key) or DeploymentMemory()

    # -- 1. what happened ------------------------------------------------------------------

    def take_in(self) -> None:
        self.actions += [Drop(i.id, i.lost) for i in self.world.instances if i.lost]
        for replica in self.world.replicas:
            if replica.ended is not None:
                self.ended(replica)
        for replica in self.live:
            if replica.connected:
                self.connected(replica)
            elif replica.id in self.ready and replica.id not in self.stopping:
                self.away(replica)

    def ended(self, replica: ReplicaFact) -> None:
        assert replica.ended is not None
        if not replica.stopping:
            what = replica.ended.reason or f"exited with code {replica.ended.exit_code}"
            if replica.id in self.world.memory.ready:
                text = f"replica {replica.id} {what}; replacing it"
                self.actions.append(Event(replica.deployment, text, replica.id))
            else:
                self.failed_start(replica, what)
        self.actions.append(Forget(replica.id))

    def failed_start(self, replica: ReplicaFact, what: str) -> None:
        assert replica.ended is not None
        memory = self.memory_of(replica.deployment)
        failed_starts = memory.failed_starts + 1
        delay = min(MAX_BACKOFF, 2.0 ** (failed_starts - 1))
        self.memory[replica.deployment] = replace(
            memory, failed_starts=failed_starts, retry_at=self.now + delay
        )
        problem = (
            f"replica {replica.id} {what} before it connected (failed start {failed_starts}); "
            f"next try in {delay:g} s"
        )
        tail = replica.ended.last_output
        told = problem + ("; its last output:\n" + "\n".join(tail) if tail else "")
        self.actions.append(Event(replica.deployment, told, replica.id, warn=True))
        self.actions.append(Problem(replica.deployment, problem, quiet=True))

    def connected(self, replica: ReplicaFact) -> None:
        self.lost_since.pop(replica.id, None)
        if replica.id in self.ready:
            return
        self.ready.add(replica.id)
        key = replica.deployment
        self.memory[key] = replace(self.memory_of(key), failed_starts=0)
        self.actions.append(Solved(key))
        text = f"replica {replica.id} connected and is ready"
        self.actions.append(Event(key, text, replica.id))

    def away(self, replica: ReplicaFact) -> None:
        since = self.lost_since.setdefault(replica.id, self.now)
        if self.now - since >= self.world.lost_grace:
            self.stop(replica.id, LOST_STREAM)

    def stop(self, replica_id: str, why: str) -> None:
        self.stopping.add(replica_id)
        self.actions.append(Stop(replica_id, why))

    # -- 2. what no longer runs ------------------------------------------------------------

    def stop_unwanted(self) -> None:
        plans = {plan.key: plan for plan in self.world.plans}
        for replica in self.live:
            plan = plans.get(replica.deployment)
            if replica.id not in self.stopping and (
                plan is None or not still_wanted(replica, plan)
            ):
                self.stop(replica.id, UNWANTED)

    # -- 3. each deployment ----------------------------------------------------------------

    def deployment_apart(self, plan: DeploymentPlan) -> None:
        """Decide for ``plan``; what it raises is its failure, and the others carry on."""
        decided, self.actions = self.actions, []
        try:
            self.deployment(plan)
        except Exception as exc:
            self.actions = [CannotDecide(plan.key, exc)]
        self.actions = decided + self.actions

    def deployment(self, plan: DeploymentPlan) -> None:
        memory, now = self.memory_of(plan.key), self.now
        if not plan.blocked and memory.blocked:
            self.actions.append(Solved(plan.key, memory.blocked))  # it was blocked, no longer
        if plan.key in self.world.not_done:
            self.actions.append(Problem(plan.key, self.world.not_done[plan.key]))
        load = self.world.load.get(plan.key, (0, 0))
        if isinstance(load, Exception):
            raise load
        mine = self.running(plan.key)
        sample = LoadSample(now, *load)
        scale, window = self.autoscale(plan, memory, sample, mine)
        if plan.blocked:
            self.actions.append(Problem(plan.key, plan.blocked))
        if scale.changed:
            self.actions.append(Event(plan.key, f"desired replicas: {scale.reason}"))
        if len(mine) > scale.desired:
            self.scale_down(plan, mine, len(mine) - scale.desired)
        elif len(mine) < scale.desired and not plan.blocked and now >= memory.retry_at:
            self.scale_up(plan, scale.desired - len(mine))
        self.memory[plan.key] = replace(
            memory,
            scale=scale.state,
            samples=window,
            blocked=plan.blocked,
            in_flight=sample.in_flight,
            queued=sample.queued,
        )

    def autoscale(
        self,
        plan: DeploymentPlan,
        memory: DeploymentMemory,
        sample: LoadSample,
        mine: list[ReplicaFact],
    ) -> tuple[AutoscaleDecision, tuple[LoadSample, ...]]:
        """The autoscaler's count, with ``sample`` joining the window (kept: the history)."""
        policy = AutoscalePolicy.from_spec(plan.autoscale)
        window = (*memory.samples, sample)
        window = tuple(x for x in window if x.at >= self.now - policy.traffic_history_seconds)
        scale = decide_replicas(
            policy,
            plan.concurrency,
            list(window),
            memory.scale,
            self.now,
            disabled=plan.disabled,
            waiting=sample.queued > 0 and not any(r.connected for r in mine),
        )
        return scale, window

    def running(self, key: DeploymentKey) -> list[ReplicaFact]:
        """The deployment's replicas that are not stopping."""
        return [r for r in self.live if r.deployment == key and r.id not in self.stopping]

    def scale_down(self, plan: DeploymentPlan, mine: list[ReplicaFact], count: int) -> None:
        # Replicas that are not connected go first: stopping them loses no capacity.
        chosen = [r.id for r in mine if not r.connected][:count]
        rest = [
            PlacedReplica(r.id, _nodepool_key(r), r.instance_id) for r in mine if r.id not in chosen
        ]
        views = self.capacity.views(plan)
        removals = choose_removals(count - len(chosen), rest, views, plan.request)
        for replica_id in (*chosen, *removals):
            self.stop(replica_id, FEWER)

    def scale_up(self, plan: DeploymentPlan, count: int) -> None:
        room = self.headroom(plan)
        if room.replicas is not None and room.replicas < count:
            self.actions.append(Problem(plan.key, capped(room, count)))
            count = room.replicas
        if count == 0:
            return
        result = place(
            plan.id,
            plan.request,
            count,
            self.capacity.views(plan),
            scheduling_choice=plan.scheduling_choice,
            disable_packing=plan.autoscale.disable_packing,
            rng=self.world.rng,
        )
        self.capacity.take(plan, result.nodepools)
        for placement in result.placed:
            new = self.capacity.on_new_instance(plan, placement)
            self.actions.append(Start(plan.key, replace(placement, new_instance=new)))
            self.added.setdefault(plan.user_id, []).append(usage(plan.request))
        self.actions += [Problem(plan.key, p.reason) for p in result.unplaced[:1]]

    def headroom(self, plan: DeploymentPlan) -> Headroom:
        """What ``plan``'s user may still add: all its replicas count, draining ones and those
        this round starts too."""
        quota = self.world.quotas.for_user(plan.user_id)
        if quota.unlimited:
            return Headroom(None)
        held = total(
            [
                *(usage(r.request) for r in self.live if r.deployment[0] == plan.user_id),
                *self.added.get(plan.user_id, ()),
            ]
        )
        return headroom(plan.user_id, quota, held, usage(plan.request))

    # -- 4. idle instances -----------------------------------------------------------------

    def release_idle(self) -> None:
        keep: dict[PoolKey, int] = {}
        for plan in self.world.plans:
            for pool in plan.pools:
                keep[pool.key] = max(keep.get(pool.key, 0), pool.min_instances)
        running, idle = self.capacity.running(), self.capacity.idle()
        used = set(running) - set(idle)
        self.actions += [Release(i) for i in spare_instances(running, used, keep)]


def _nodepool_key(replica: ReplicaFact) -> tuple[str, str]:
    return (replica.nodepool.compute_cluster_id, replica.nodepool.nodepool_id)
