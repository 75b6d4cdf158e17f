"""The orchestrator: the loop that makes running replicas match the deployments in the store.

Each round (every ``tick`` seconds, and at once when something changed: a write to the store,
a request that began waiting for a replica) it loads, decides, then applies:

1. load: the orchestrated deployments (:mod:`~orchard.orchestration.snapshot`), what the
   providers say of the replicas they run, which replicas are connected to the dispatcher,
   and each deployment's load (items in flight and calls waiting);
2. decide: the desired replica count (:func:`~orchard.orchestration.autoscale.decide_replicas`),
   where new replicas go (:func:`~orchard.orchestration.placement.place`) and which go when
   there are too many (:func:`~orchard.orchestration.placement.choose_removals`); these are
   pure functions of what was loaded and ``now``;
3. apply: start instances and replicas through the providers, ask surplus replicas to drain,
   release instances nobody uses (down to their nodepool's ``min_instances``), write what the
   replicas printed to the runner log and what was done, and why, to the event log.

Room. A nodepool whose provider answers "no capacity" when asked for a new instance (its
machines are all held, its Ray node group has no free node) gets no new instance for
``NO_ROOM_BACKOFF`` seconds: placement then puts the replica in another nodepool of the
deployment when one can take it. An instance the provider reports lost (its machine died) is
forgotten; its replicas are reported ended and replaced like any other.

GPUs. Placement sees each instance's GPUs as its provider reports them
(:class:`~orchard.providers.gpus.SharesDevices`: the provider assigns devices, by the same rules
placement plans with); for a provider that does not, as the instance's shape with the devices
placement planned for its replicas. A launch carries the replica's GPU need as its deployment
decides it (``ReplicaLaunch.gpus``: shared only when the deployment allows packing and the model
states its ``accelerator_memory``), and the provider assigns devices for that need; replicas of a
deployment that disables packing also get instances of their own.

Health. A replica that exits, or is killed by its provider, is replaced on the next round:
its deployment now has fewer replicas than desired. A ready replica whose stream to the server
is gone (it reconnects by itself when it can) is stopped, and so replaced, once it has stayed
away for ``lost_grace``. One that exits before it ever connected
(a broken environment, a crash in ``load_model``) counts as a failed start: the deployment
backs off (1, 2, 4 ... up to 60 seconds between tries) and the event log says why, with the
last lines the replica printed, instead of restarting it in a silent loop. A connection
resets the count.

Quotas. A round starts no replica beyond its user's headroom (:func:`orchard.quotas.headroom`:
what all that user's replicas hold, draining ones too, across its deployments, against its
quota in ``settings.quotas``); a deployment held back says so, with the quota and its use, as
its problem and in its events. Deployments of other users scale as before.

Failures stay with their deployment. A deployment that cannot run (its version was made
without an upload, its package is unreadable, its stored spec no longer validates) says why, with
the fix, as its problem and in its events, whether or not it wants a replica, and starts none;
one whose round raises gets the reason as its problem; every other deployment carries on. A
deployment that cannot be planned keeps its last plan (and its replicas), blocked. A failure
that repeats every round is logged once, then counted (:mod:`~orchard.orchestration.repeats`).

Replicas authenticate with a token the orchestrator makes for each one (never a user's PAT);
it is valid for ``ProcessRunnerItems`` only, and only while this server process lives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import replace

from orchard.dispatch.dispatcher import Dispatcher
from orchard.dispatch.sessions import PoolKey
from orchard.orchestration.autoscale import AutoscalePolicy, LoadSample, decide_replicas
from orchard.orchestration.capacity import nodepool_views
from orchard.orchestration.launch import replica_launch
from orchard.orchestration.placement import NodepoolView, place
from orchard.orchestration.removal import PlacedReplica, choose_removals, spare_instances
from orchard.orchestration.repeats import Repeats, reason_of
from orchard.orchestration.replica_logs import last_lines, read_output
from orchard.orchestration.snapshot import DeploymentPlan, PoolPlan
from orchard.orchestration.store_edge import StoreEdge
from orchard.orchestration.view import View, publish
from orchard.orchestration.world import (
    MAX_BACKOFF,
    NO_ROOM_BACKOFF,
    DeploymentState,
    OrchestratorSettings,
    Replica,
    pool_name,
    still_wanted,
    usage,
)
from orchard.providers import ProviderRegistry
from orchard.providers.base import Instance, NoCapacity, NodepoolInfo
from orchard.quotas import capped, headroom, total
from orchard.services import logs
from orchard.services.models import VersionRef

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
        self.settings = settings
        self.providers = providers
        self.dispatcher = dispatcher
        self.store = store
        self.tokens = tokens
        self.clock, self.wall_clock = clock, wall_clock
        self.view = View()
        self._replicas: dict[str, Replica] = {}
        self._instances: dict[str, tuple[str, PoolKey, Instance]] = {}  # id: provider, pool
        self._states: dict[tuple[str, str], DeploymentState] = {}
        self._plans: list[DeploymentPlan] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._rng = random.Random()
        self._pending_logs: list[tuple[logs.LogRef, list[str]]] = []
        self._no_room: dict[PoolKey, float] = {}  # nodepool: until when it gets no new instance
        self._repeats = Repeats(log)

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
        for provider in self.providers.all():
            if provider.orchestrated:
                await asyncio.to_thread(provider.shutdown, self.settings.drain_grace)
        for replica in self._replicas.values():
            self.tokens.pop(replica.token, None)
        self._replicas.clear()
        self._instances.clear()

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
        self._tell_nodepools()
        now = self.clock()
        self._observe(now)
        plans = {plan.key: plan for plan in self._plans}
        for key in list(self._states):
            if key not in plans:
                del self._states[key]
        for replica in list(self._replicas.values()):
            plan = plans.get(replica.deployment)
            if plan is None or not still_wanted(replica, plan):
                self._stop(replica, "its deployment no longer runs it here")
        for plan in self._plans:
            self._reconcile_apart(plan, now)
        self._repeats.forget({k for p in self._plans for k in (("plan", p.key), ("run", p.key))})
        self._release_idle_instances()
        await self._write_logs()
        self._publish()

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

    def _tell_nodepools(self) -> None:
        pools: dict[str, dict[str, NodepoolInfo]] = {}
        for plan in self._plans:
            for pool in plan.pools:
                pools.setdefault(pool.provider, {})[pool_name(pool)] = NodepoolInfo(
                    pool_name(pool),
                    pool.region,
                    pool.instance_type,
                    pool.shape,
                    pool.min_instances,
                    pool.max_instances,
                )
        for provider in self.providers.all():
            if provider.orchestrated:
                provider.set_nodepools(list(pools.get(provider.id, {}).values()))

    def _observe(self, now: float) -> None:
        """What happened since the last round: exits, lost instances, connections, output."""
        connected = {s.hello.replica_id for s in self.dispatcher.sessions()}
        for provider in self.providers.all():
            for instance_id, why in provider.lost_instances():
                held = self._instances.pop(instance_id, None)
                if held is not None:
                    log.warning("instance %s of %s is gone: %s", instance_id, held[1], why)
        for provider in self.providers.all():
            for status in provider.poll():
                replica = self._replicas.get(status.id)
                if replica is None or status.running:
                    continue
                self._read_output(replica)
                if not replica.stopping:
                    self._exited(replica, status.exit_code, status.reason, now)
                self._forget(replica)
        for replica in list(self._replicas.values()):
            self._read_output(replica)
            replica.connected = replica.id in connected
            if replica.connected:
                replica.lost_since = None
                if not replica.ready:
                    replica.ready = True
                    state = self._state(replica.deployment)
                    state.failures, state.last_problem = 0, ""
                    self._event(replica, f"replica {replica.id} connected and is ready")
            elif replica.ready and not replica.stopping:
                replica.lost_since = replica.lost_since or now
                if now - replica.lost_since >= self.settings.lost_grace:
                    self._stop(replica, "it lost its stream to the server and did not reconnect")

    def _exited(self, replica: Replica, code: int | None, reason: str, now: float) -> None:
        state = self._state(replica.deployment)
        what = reason or f"exited with code {code}"
        if replica.ready:
            self._event(replica, f"replica {replica.id} {what}; replacing it")
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
        self._event(replica, message)
        log.warning("deployment %s: %s", replica.deployment[1], state.last_problem)

    def _reconcile_apart(self, plan: DeploymentPlan, now: float) -> None:
        """Reconcile ``plan``; what it raises becomes its problem, and the others carry on."""
        what = f"reconciling deployment {plan.id} of user {plan.user_id}"
        try:
            self._reconcile(plan, now)
        except Exception as exc:
            reason = reason_of(exc)
            self._repeats.failed(("run", plan.key), what, reason, exc)
            self._problem(
                plan,
                self._state(plan.key),
                f"Orchard failed to run this deployment ({reason}); it tries again every "
                "round; the server log has the details",
            )
        else:
            self._repeats.succeeded(("run", plan.key), what)

    def _reconcile(self, plan: DeploymentPlan, now: float) -> None:
        state = self._state(plan.key)
        self._say_blocked(plan, state)
        mine = [r for r in self._replicas.values() if r.deployment == plan.key and not r.stopping]
        ready = [r for r in mine if r.connected]
        in_flight, queued = self.dispatcher.load([p.key for p in plan.pools], plan.version)
        state.in_flight, state.queued = in_flight, queued
        state.samples.append(LoadSample(now, in_flight, queued))
        policy = AutoscalePolicy.from_spec(plan.autoscale)
        while state.samples and state.samples[0].at < now - policy.traffic_history_seconds:
            state.samples.popleft()
        decision = decide_replicas(
            policy,
            plan.capacity,
            list(state.samples),
            state.scale,
            now,
            disabled=plan.disabled,
            waiting=queued > 0 and not ready,
        )
        state.scale = decision.state
        if decision.changed:
            self._deployment_event(plan, f"desired replicas: {decision.reason}")
        desired = decision.desired
        if len(mine) > desired:
            self._scale_down(plan, mine, len(mine) - desired)
        elif len(mine) < desired and not plan.blocked and now >= state.retry_at:
            self._scale_up(plan, state, desired - len(mine))

    def _say_blocked(self, plan: DeploymentPlan, state: DeploymentState) -> None:
        """A deployment that can start no replica says why at once, whether or not it wants
        one, and stops saying it once it can."""
        if plan.blocked:
            self._problem(plan, state, plan.blocked)
        elif state.blocked and state.last_problem == state.blocked:
            state.last_problem = ""
        state.blocked = plan.blocked

    def _scale_up(self, plan: DeploymentPlan, state: DeploymentState, count: int) -> None:
        count = self._within_quota(plan, state, count)
        if count == 0:
            return
        views = self._nodepool_views(plan)
        result = place(
            plan.id,
            plan.request,
            count,
            views,
            scheduling_choice=plan.scheduling_choice,
            disable_packing=plan.autoscale.disable_packing,
            rng=self._rng,
        )
        pools = {(p.key.compute_cluster_id, p.key.nodepool_id): p for p in plan.pools}
        started: dict[tuple[tuple[str, str], str], Instance] = {}
        for placement in result.placed:
            assert placement.nodepool is not None and placement.instance_id is not None
            pool = pools[placement.nodepool]
            try:
                if placement.new_instance:
                    slot = (placement.nodepool, placement.instance_id)
                    if slot not in started:
                        started[slot] = self._start_instance(plan, pool)
                    instance = started[slot]
                else:
                    instance = self._instances[placement.instance_id][2]
                self._start_replica(plan, pool, instance, placement.devices)
            except NoCapacity as exc:
                self._problem(plan, state, f"no room for a replica in {pool_name(pool)}: {exc}")
                if placement.new_instance:
                    # Placement counts on this nodepool for new instances no more for a while,
                    # so the next round (now) puts the replica in another one if it may.
                    self._no_room[pool.key] = self.clock() + NO_ROOM_BACKOFF
                    self.wake()
                return
        for placement in result.unplaced:
            self._problem(plan, state, placement.reason)
            return

    def _within_quota(self, plan: DeploymentPlan, state: DeploymentState, count: int) -> int:
        """``count``, or the fewer replicas its user's quota has room for (then the problem)."""
        quota = self.settings.quotas.for_user(plan.user_id)
        if quota.unlimited:
            return count
        held = total(
            usage(r.request) for r in self._replicas.values() if r.deployment[0] == plan.user_id
        )
        room = headroom(plan.user_id, quota, held, usage(plan.request))
        if room.replicas is None or room.replicas >= count:
            return count
        self._problem(plan, state, capped(room, count))
        return room.replicas

    def _scale_down(self, plan: DeploymentPlan, mine: list[Replica], count: int) -> None:
        placed = [
            PlacedReplica(
                r.id,
                (r.plan_pool.key.compute_cluster_id, r.plan_pool.key.nodepool_id),
                r.instance.id,
            )
            for r in mine
        ]
        # Replicas that are not connected go first: stopping them loses no capacity.
        starting = [r for r in mine if not r.connected][:count]
        chosen = [r.id for r in starting]
        rest = [p for p in placed if p.id not in chosen]
        removals = choose_removals(
            count - len(chosen), rest, self._nodepool_views(plan), plan.request
        )
        for replica_id in [*chosen, *removals]:
            self._stop(self._replicas[replica_id], "the deployment needs fewer replicas")

    # -- applying ----------------------------------------------------------------------------

    def _start_instance(self, plan: DeploymentPlan, pool: PoolPlan) -> Instance:
        provider = self.providers.get(pool.provider)
        assert provider is not None
        instance = provider.start_instance(pool_name(pool), pool.shape)
        self._instances[instance.id] = (pool.provider, pool.key, instance)
        self._deployment_event(
            plan,
            f"started instance {instance.id} ({instance.where}) of nodepool {pool.key.nodepool_id}",
            pool,
        )
        return instance

    def _start_replica(
        self, plan: DeploymentPlan, pool: PoolPlan, instance: Instance, devices: tuple[int, ...]
    ) -> None:
        provider = self.providers.get(pool.provider)
        assert provider is not None
        replica_id = f"{plan.id[:40]}-{uuid.uuid4().hex[:8]}"
        token = secrets.token_urlsafe(32)
        launch = replica_launch(self.settings, plan, pool, instance, replica_id, token)
        self.tokens[token] = plan.user_id
        try:
            provider.start_replica(launch)
        except BaseException:
            self.tokens.pop(token, None)
            raise
        replica = Replica(
            id=replica_id,
            deployment=plan.key,
            plan_pool=pool,
            version=plan.version,
            instance=instance,
            request=plan.request,
            exclusive=plan.autoscale.disable_packing,
            token=token,
            log_path=launch.log_path,
            started=self.clock(),
            gpus=launch.gpus,
            devices=devices,
        )
        self._replicas[replica_id] = replica
        self._event(replica, f"starting replica {replica_id} on instance {instance.id}")

    def _stop(self, replica: Replica, why: str) -> None:
        if replica.stopping:
            return
        replica.stopping = True
        provider = self.providers.get(replica.plan_pool.provider)
        if provider is not None:
            provider.stop_replica(replica.id, self.settings.drain_grace)
        self._event(replica, f"stopping replica {replica.id}: {why}")

    def _forget(self, replica: Replica) -> None:
        self._replicas.pop(replica.id, None)
        self.tokens.pop(replica.token, None)
        with contextlib.suppress(OSError):
            replica.log_path.unlink()

    def _release_idle_instances(self) -> None:
        keep: dict[PoolKey, int] = {}
        for plan in self._plans:
            for pool in plan.pools:
                keep[pool.key] = max(keep.get(pool.key, 0), pool.min_instances)
        used = {r.instance.id for r in self._replicas.values()}
        pools = {instance_id: held[1] for instance_id, held in self._instances.items()}
        for instance_id in spare_instances(pools, used, keep):
            provider_id, _, _ = self._instances.pop(instance_id)
            provider = self.providers.get(provider_id)
            if provider is not None:
                provider.stop_instance(instance_id)

    # -- what placement sees ---------------------------------------------------------------

    def _nodepool_views(self, plan: DeploymentPlan) -> list[NodepoolView]:
        return nodepool_views(
            plan,
            self._instances,
            list(self._replicas.values()),
            self.providers,
            self._no_room,
            self.clock(),
        )

    # -- logs, events and the published view -------------------------------------------------

    def _state(self, key: tuple[str, str]) -> DeploymentState:
        return self._states.setdefault(key, DeploymentState())

    def _problem(self, plan: DeploymentPlan, state: DeploymentState, problem: str) -> None:
        if problem != state.last_problem:
            state.last_problem = problem
            self._deployment_event(plan, problem)

    def _deployment_event(
        self, plan: DeploymentPlan, message: str, pool: PoolPlan | None = None
    ) -> None:
        pool = pool or plan.pools[0]
        self._record(plan.key, plan.version, pool, message)

    def _event(self, replica: Replica, message: str) -> None:
        self._record(replica.deployment, replica.version, replica.plan_pool, message)

    def _record(
        self, key: tuple[str, str], version: VersionRef, pool: PoolPlan, message: str
    ) -> None:
        stamped = f"{time.strftime('%H:%M:%S', time.localtime(self.wall_clock()))} {message}"
        self._state(key).events.append(stamped)
        log.info("deployment %s: %s", key[1], message)
        ref = logs.LogRef(
            key[0],
            version.model_id,
            version.version_id,
            logs.EVENTS,
            pool.key.compute_cluster_id,
            pool.key.nodepool_id,
            pool.runner_id,
        )
        self._pending_logs.append((ref, [stamped]))

    def _read_output(self, replica: Replica) -> None:
        entry = read_output(replica)
        if entry is not None:
            self._pending_logs.append(entry)

    async def _write_logs(self) -> None:
        pending, self._pending_logs = self._pending_logs, []
        if pending:
            await self.store.append_logs(pending)

    def _publish(self) -> None:
        pools = (pool_key for _, pool_key, _ in self._instances.values())
        self.view = publish(self._plans, self._replicas.values(), pools, self._states)
