"""The orchestrator: the loop that makes running replicas match the deployments in the store.

Each round (every ``tick`` seconds, and at once when something changed: a write to the store,
a request that began waiting for a replica, a nodepool the last round found without room),
:meth:`Orchestrator.round` does, in order:

1. **load**: :meth:`~orchard.orchestration.store_edge.StoreEdge.load` gives the orchestrated
   deployments' plans (a deployment that could not be planned keeps its last plan, blocked);
   :meth:`~orchard.orchestration.apply.Apply.tell_nodepools` gives each provider its nodepools;
2. **observe**: :func:`~orchard.orchestration.observe.observe` reads the dispatcher and the
   providers and returns the round's :class:`~orchard.orchestration.world.World`, with what
   apply started and what the last round handed on
   (:class:`~orchard.orchestration.observe.Carried`);
3. **decide**: :func:`~orchard.orchestration.decide.decide`, pure, returns every action of
   the round and the memory for the next;
4. **apply**: :meth:`~orchard.orchestration.apply.Apply.carry_out`, the only code that changes
   what the providers run, does the actions and returns what it could not do (an
   :class:`~orchard.orchestration.apply.Outcome`), which the next round's world carries;
5. the journal's lines (events, what replicas printed) go to the store and the
   :mod:`~orchard.orchestration.view` is published.

The loop keeps no bookkeeping of its own: what a round hands the next is decide's memory and
apply's outcome. A failure that repeats every round is logged once, then counted
(:mod:`~orchard.orchestration.repeats`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import replace

from orchard.dispatch.dispatcher import Dispatcher
from orchard.orchestration.apply import Apply, Outcome
from orchard.orchestration.decide import decide
from orchard.orchestration.journal import Journal
from orchard.orchestration.observe import Carried, Started, observe
from orchard.orchestration.repeats import Repeats, reason_of
from orchard.orchestration.snapshot import DeploymentPlan
from orchard.orchestration.store_edge import StoreEdge
from orchard.orchestration.view import LiveView, publish
from orchard.orchestration.world import NO_ROOM_BACKOFF, Memory, OrchestratorSettings, World
from orchard.providers import ProviderRegistry

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
        self.view = LiveView()
        self.journal = Journal(log, wall_clock)
        self.apply = Apply(settings, providers, tokens, self.journal, clock)
        self._plans: list[DeploymentPlan] = []
        self._carried = Carried()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._rng = random.Random()
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
        """Load, observe, decide, apply; then write the journal and publish the view."""
        self._plans = self._planned(await self.store.load())
        self.apply.tell_nodepools(self._plans)
        world = observe(
            self._plans,
            self.providers,
            self.dispatcher,
            Started(self.apply.replicas, self.apply.instances),
            self._carried,
            self.settings,
            self.clock(),
            self._rng,
        )
        decision = decide(world)
        outcome = self.apply.carry_out(world, decision.actions)
        self._carry(world, decision.memory, outcome)
        self.journal.keep_only({plan.key for plan in self._plans})
        pending = self.journal.take()
        if pending:
            await self.store.append_logs(pending)
        connected = {r.id for r in world.replicas if r.connected}
        pools = (started.nodepool for started in self.apply.instances.values())
        self.view = publish(
            self._plans,
            self.apply.replicas.values(),
            connected,
            pools,
            decision.memory,
            self.journal.told,
        )

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

    def _carry(self, world: World, memory: Memory, outcome: Outcome) -> None:
        """What this round hands the next: decide's memory and what apply could not do. A
        nodepool without room is skipped by placement for ``NO_ROOM_BACKOFF``, from a round
        that runs at once."""
        no_room = dict(world.no_room)
        for pool in outcome.no_room:
            no_room[pool] = world.now + NO_ROOM_BACKOFF
        self._carried = Carried(memory, no_room, dict(outcome.problems))
        for plan in self._plans:
            what = f"reconciling deployment {plan.id} of user {plan.user_id}"
            error = outcome.errors.get(plan.key)
            if error is None:
                self._repeats.succeeded(("run", plan.key), what)
            else:
                self._repeats.failed(("run", plan.key), what, reason_of(error), error)
        self._repeats.forget({k for p in self._plans for k in (("plan", p.key), ("run", p.key))})
        if outcome.no_room:
            self.wake()
