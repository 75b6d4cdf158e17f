"""The orchestrator: the loop that makes running replicas match the deployments in the store.

Each round (every ``tick`` seconds, and at once when something changed: a write to the store,
a request that began waiting for a replica):

1. load the orchestrated deployments (:mod:`~orchard.orchestration.store_edge`,
   :mod:`~orchard.orchestration.snapshot`) and tell the providers their nodepools;
2. observe (:mod:`~orchard.orchestration.observe`, read only): which replicas are connected,
   which ended, which instances were lost, each deployment's load, and the nodepools the last
   round found without room; then take that in: lost instances and ended replicas are
   forgotten (an end before the replica ever connected is a failed start: its deployment backs
   off 1, 2, 4 ... 60 s, its last output in the event), connections make replicas ready, and a
   ready replica away for ``lost_grace`` is stopped, so replaced;
3. per deployment, decide (:func:`~orchard.orchestration.decide.decide`, pure: its situation
   in, its new autoscaling state and actions out: the desired count, what its user's quota lets
   it add, where new replicas go and which go), then apply: have
   :meth:`~orchard.orchestration.apply.Apply.carry_out`, the only code that changes what
   providers run, do the actions. A provider with no room for a new instance is a fact for the
   next round (run at once), whose placement then skips that nodepool for ``NO_ROOM_BACKOFF``;
4. release idle instances (down to ``min_instances``), write the journal's lines (events, what
   replicas printed) to the store and publish the :mod:`~orchard.orchestration.view`.

Failures stay with their deployment: one that cannot run (``DeploymentPlan.blocked``) says why
as its problem and starts nothing; one whose round raises gets the reason as its problem; the
others carry on. One that cannot be planned keeps its last plan, blocked. A failure that
repeats every round is logged once, then counted (:mod:`~orchard.orchestration.repeats`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import shutil
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace

from orchard.dispatch.dispatcher import Dispatcher
from orchard.dispatch.sessions import PoolKey
from orchard.orchestration.apply import Apply
from orchard.orchestration.capacity import nodepool_views
from orchard.orchestration.decide import RunningReplica, Situation, decide
from orchard.orchestration.journal import Journal
from orchard.orchestration.observe import Observation, observe
from orchard.orchestration.placement import NodepoolView
from orchard.orchestration.repeats import Repeats, reason_of
from orchard.orchestration.replica_logs import last_lines
from orchard.orchestration.snapshot import DeploymentPlan
from orchard.orchestration.store_edge import StoreEdge
from orchard.orchestration.view import View, publish
from orchard.orchestration.world import (
    MAX_BACKOFF,
    NO_ROOM_BACKOFF,
    DeploymentState,
    OrchestratorSettings,
    Replica,
    still_wanted,
    usage,
)
from orchard.providers import ProviderRegistry
from orchard.providers.base import ReplicaStatus
from orchard.quotas import Headroom, headroom, total

log = logging.getLogger(__name__)


class Orchestrator:
    def __init__(
        self,
        settings: OrchestratorSettings,
        providers: ProviderRegistry,
        dispatcher: Dispatcher,
        store: StoreEdge,
        tokens: dict[str, str],
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,  # only for the times events show
    ) -> None:
        self.providers = providers
        self.dispatcher = dispatcher
        self.store = store
        self.tokens = tokens
        self.clock = clock
        self.view = View()
        self.journal = Journal(log, wall_clock)
        self.apply = Apply(settings, providers, tokens, self.journal, clock)
        self._plans: list[DeploymentPlan] = []
        self._seen = Observation(frozenset(), (), ())
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._rng = random.Random()
        self._no_room: dict[PoolKey, float] = {}  # nodepool: until when it gets no new instance
        self._repeats = Repeats(log)

    @property
    def settings(self) -> OrchestratorSettings:
        return self.apply.settings

    @settings.setter
    def settings(self, settings: OrchestratorSettings) -> None:
        self.apply.settings = settings

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        # Private folders of replicas a previous server left (it stopped without cleaning up).
        shutil.rmtree(self.settings.home / "sandboxes", ignore_errors=True)
        self._task = asyncio.get_running_loop().create_task(self._loop())

    def wake(self) -> None:
        self._wake.set()

    async def close(self) -> None:
        """Stop the loop, then every replica (drained up to the grace) and instance."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.apply.shutdown()

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._repeats.failed("round", "orchestration round", reason_of(exc), exc)
            else:
                self._repeats.succeeded("round", "orchestration round")
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancel that
            # arrives as the wait ends, and close() would then wait for this loop forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.tick):
                    await self._wake.wait()

    # -- one round -------------------------------------------------------------------------

    async def round(self) -> None:
        self._plans = self._planned(await self.store.load())
        self.apply.tell_nodepools(self._plans)
        now = self.clock()
        self._seen = observe(self.providers, self.dispatcher, self._plans, self._no_room)
        self._take_in(self._seen, now)
        plans = {plan.key: plan for plan in self._plans}
        self.journal.keep_only(set(plans))
        for replica in list(self.apply.replicas.values()):
            plan = plans.get(replica.deployment)
            if plan is None or not still_wanted(replica, plan):
                self.apply.stop(replica, "its deployment no longer runs it here")
        for plan in self._plans:
            self._reconcile_apart(plan, now)
        self._repeats.forget({k for p in self._plans for k in (("plan", p.key), ("run", p.key))})
        self.apply.release_idle_instances(self._plans)
        pending = self.journal.take()
        if pending:
            await self.store.append_logs(pending)
        pools = (pool_key for _, pool_key, _ in self.apply.instances.values())
        self.view = publish(self._plans, self.apply.replicas.values(), pools, self.journal.states)

    def _planned(self, loaded: list[DeploymentPlan]) -> list[DeploymentPlan]:
        """This round's plans: a deployment that could not be planned keeps its last plan (when
        it had one), blocked by why, so that its replicas stay and none start; its failure is
        logged once."""
        last = {plan.key: plan for plan in self._plans}
        plans = []
        for plan in loaded:
            what = f"planning deployment {plan.id} of user {plan.user_id}"
            if plan.planned:
                self._repeats.succeeded(("plan", plan.key), what)
                plans.append(plan)
                continue
            self._repeats.failed(("plan", plan.key), what, plan.blocked, plan.error)
            known = last.get(plan.key)
            plans.append(plan if known is None else replace(known, blocked=plan.blocked))
        return plans

    # -- what the observation means --------------------------------------------------------

    def _take_in(self, seen: Observation, now: float) -> None:
        """Lost instances are forgotten, ended replicas too (a failed start backs off), and
        connections mark replicas ready; one lost for ``lost_grace`` is stopped."""
        for instance_id, why in seen.lost_instances:
            held = self.apply.instances.pop(instance_id, None)
            if held is not None:
                log.warning("instance %s of %s is gone: %s", instance_id, held[1], why)
        for status in seen.ended:
            replica = self.apply.replicas.get(status.id)
            if replica is not None:
                self._ended(replica, status, now)
        for replica in list(self.apply.replicas.values()):
            self.journal.replica_output(replica)
            replica.connected = replica.id in seen.connected
            if replica.connected:
                replica.lost_since = None
                if not replica.ready:
                    replica.ready = True
                    state = self.journal.state(replica.deployment)
                    state.failures, state.last_problem = 0, ""
                    self.journal.replica_event(
                        replica, f"replica {replica.id} connected and is ready"
                    )
            elif replica.ready and not replica.stopping:
                replica.lost_since = replica.lost_since or now
                if now - replica.lost_since >= self.settings.lost_grace:
                    why = "it lost its stream to the server and did not reconnect"
                    self.apply.stop(replica, why)

    def _ended(self, replica: Replica, status: ReplicaStatus, now: float) -> None:
        self.journal.replica_output(replica)
        if not replica.stopping:
            self._exited(replica, status.exit_code, status.reason, now)
        self.apply.forget(replica)

    def _exited(self, replica: Replica, code: int | None, reason: str, now: float) -> None:
        state = self.journal.state(replica.deployment)
        what = reason or f"exited with code {code}"
        if replica.ready:
            self.journal.replica_event(replica, f"replica {replica.id} {what}; replacing it")
            return
        state.failures += 1
        delay = min(MAX_BACKOFF, 2.0 ** (state.failures - 1))
        state.retry_at = now + delay
        tail = last_lines(replica.log_path)
        state.last_problem = (
            f"replica {replica.id} {what} before it connected (failed start "
            f"{state.failures}); next try in {delay:g} s"
        )
        message = state.last_problem
        if tail:
            message += "; its last output:\n" + "\n".join(tail)
        self.journal.replica_event(replica, message)
        log.warning("deployment %s: %s", replica.deployment[1], state.last_problem)

    # -- deciding, deployment by deployment --------------------------------------------------

    def _reconcile_apart(self, plan: DeploymentPlan, now: float) -> None:
        """Reconcile ``plan``; what it raises becomes its problem, and the others carry on."""
        what = f"reconciling deployment {plan.id} of user {plan.user_id}"
        try:
            self._reconcile(plan, now)
        except Exception as exc:
            reason = reason_of(exc)
            self._repeats.failed(("run", plan.key), what, reason, exc)
            self.journal.problem(
                plan,
                f"Orchard failed to run this deployment ({reason}); it tries again every "
                "round; the server log has the details",
            )
        else:
            self._repeats.succeeded(("run", plan.key), what)

    def _reconcile(self, plan: DeploymentPlan, now: float) -> None:
        """Decide for ``plan`` (:func:`~orchard.orchestration.decide.decide`), then apply."""
        state = self.journal.state(plan.key)
        if not plan.blocked and state.blocked and state.last_problem == state.blocked:
            state.last_problem = ""  # it was blocked, and is no longer
        state.blocked = plan.blocked
        load = self._seen.load.get(plan.key, (0, 0))
        if isinstance(load, Exception):
            raise load
        state.in_flight, state.queued = load
        decision = decide(self._situation(plan, state, now))
        state.scale, state.samples = decision.scale, deque(decision.samples)
        no_room = self.apply.carry_out(plan, decision.actions)
        if no_room is not None:
            # A fact for the next round (now), whose placement counts on this nodepool for new
            # instances no more for a while and puts the replica in another one if it may.
            self._no_room[no_room] = self.clock() + NO_ROOM_BACKOFF
            self.wake()

    def _situation(self, plan: DeploymentPlan, state: DeploymentState, now: float) -> Situation:
        mine = tuple(
            RunningReplica(
                r.id,
                (r.plan_pool.key.compute_cluster_id, r.plan_pool.key.nodepool_id),
                r.instance.id,
                r.connected,
            )
            for r in self.apply.replicas.values()
            if r.deployment == plan.key and not r.stopping
        )
        return Situation(
            plan,
            mine,
            state.in_flight,
            state.queued,
            state.scale,
            tuple(state.samples),
            state.retry_at,
            self._headroom(plan),
            tuple(self._nodepool_views(plan)),
            now,
            self._rng,
        )

    def _headroom(self, plan: DeploymentPlan) -> Headroom:
        """What ``plan``'s user may still add: all its replicas, draining ones too, count."""
        quota = self.settings.quotas.for_user(plan.user_id)
        if quota.unlimited:
            return Headroom(None)
        held = total(
            usage(r.request)
            for r in self.apply.replicas.values()
            if r.deployment[0] == plan.user_id
        )
        return headroom(plan.user_id, quota, held, usage(plan.request))

    def _nodepool_views(self, plan: DeploymentPlan) -> list[NodepoolView]:
        """``plan``'s nodepools as placement sees them now, with the room this round observed."""
        return nodepool_views(
            plan,
            self.apply.instances,
            list(self.apply.replicas.values()),
            self.providers,
            self._seen.no_room,
            self.clock(),
        )
