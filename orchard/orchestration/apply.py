"""The last step of a round, and the only code that changes what the providers run: it tells
them the nodepools, carries out decide's actions in order (starts and stops instances and
replicas, forgets what ended or was lost) and keeps what it started (the replicas with their
tokens, the instances) for the next round to observe. What it does is written to the
:class:`~orchard.orchestration.journal.Journal`.

What a provider could not do is an :class:`Outcome`, a fact for the next round's world, not
acted on now: a provider with no room (:class:`~orchard.providers.base.NoCapacity`) names its
nodepool, whose placement the next round skips for a while, and the deployment's problem says
so; a provider that raises anything else fails that deployment alone (its problem, next round,
says why). Either way the deployment's remaining starts and stops wait for the next round."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

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
    failure,
)
from orchard.orchestration.journal import Journal
from orchard.orchestration.launch import replica_launch
from orchard.orchestration.repeats import reason_of
from orchard.orchestration.snapshot import DeploymentPlan, PoolPlan
from orchard.orchestration.world import (
    DeploymentKey,
    OrchestratorSettings,
    Replica,
    StartedInstance,
    World,
    pool_name,
)
from orchard.providers import ProviderRegistry
from orchard.providers.base import Instance, NoCapacity, NodepoolInfo

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What apply could not do this round: facts for the next."""

    problems: dict[DeploymentKey, str] = field(default_factory=dict)  # its problem next round
    errors: dict[DeploymentKey, Exception] = field(default_factory=dict)  # to log (once)
    no_room: set[PoolKey] = field(default_factory=set)  # nodepools that had no new instance


class Apply:
    def __init__(
        self,
        settings: OrchestratorSettings,
        providers: ProviderRegistry,
        tokens: dict[str, str],
        journal: Journal,
        clock: Callable[[], float],
    ) -> None:
        self.settings, self.providers, self.tokens = settings, providers, tokens
        self.journal, self.clock = journal, clock
        self.replicas: dict[str, Replica] = {}
        self.instances: dict[str, StartedInstance] = {}

    def tell_nodepools(self, plans: Sequence[DeploymentPlan]) -> None:
        """Each orchestrated provider's nodepools, as this round's plans use them."""
        pools: dict[str, dict[str, NodepoolInfo]] = {}
        for plan in plans:
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

    def carry_out(self, world: World, actions: Sequence[Action]) -> Outcome:
        """Do what :func:`~orchard.orchestration.decide.decide` said, in order; see the module
        docstring for what a provider could not do."""
        for replica in self.replicas.values():
            self.journal.replica_output(replica)
        round_ = _Carrying(self, {plan.key: plan for plan in world.plans})
        for action in actions:
            round_.do(action)
        return round_.outcome

    def start_instance(self, plan: DeploymentPlan, pool: PoolPlan) -> Instance:
        provider = self.providers.get(pool.provider)
        assert provider is not None
        instance = provider.start_instance(pool_name(pool), pool.shape)
        self.instances[instance.id] = StartedInstance(pool.provider, pool.key, instance)
        self.journal.deployment_event(
            plan,
            f"started instance {instance.id} ({instance.where}) of nodepool {pool.key.nodepool_id}",
            pool,
        )
        return instance

    def start_replica(
        self, plan: DeploymentPlan, pool: PoolPlan, instance: Instance, devices: tuple[int, ...]
    ) -> None:
        """A replica of ``plan`` on ``instance``. It authenticates with a token made for it
        alone (never a user's PAT), valid for ``ProcessRunnerItems`` only, while it runs and
        this server lives."""
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
            pool=pool,
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
        self.replicas[replica_id] = replica
        self.journal.replica_event(
            replica, f"starting replica {replica_id} on instance {instance.id}"
        )

    def stop(self, replica: Replica, why: str) -> None:
        """Ask ``replica`` to drain and exit (once); it is forgotten when it has ended."""
        if replica.stopping:
            return
        replica.stopping = True
        provider = self.providers.get(replica.pool.provider)
        if provider is not None:
            provider.stop_replica(replica.id, self.settings.drain_grace)
        self.journal.replica_event(replica, f"stopping replica {replica.id}: {why}")

    def forget(self, replica_id: str) -> None:
        """An ended replica: its token stops working and its log file goes."""
        replica = self.replicas.pop(replica_id, None)
        if replica is None:
            return
        self.tokens.pop(replica.token, None)
        with contextlib.suppress(OSError):
            replica.log_path.unlink()

    def drop(self, instance_id: str, why: str) -> None:
        """A lost instance: forgotten (its replicas end with it), never stopped."""
        started = self.instances.pop(instance_id, None)
        if started is not None:
            log.warning("instance %s of %s is gone: %s", instance_id, started.nodepool, why)

    def release(self, instance_id: str) -> None:
        """Stop an instance no replica uses."""
        started = self.instances.pop(instance_id, None)
        provider = self.providers.get(started.provider_id) if started is not None else None
        if provider is not None:
            provider.stop_instance(instance_id)

    async def shutdown(self) -> None:
        """Every replica (drained up to the grace) and instance, then their tokens."""
        for provider in self.providers.all():
            if provider.orchestrated:
                await asyncio.to_thread(provider.shutdown, self.settings.drain_grace)
        for replica in self.replicas.values():
            self.tokens.pop(replica.token, None)
        self.replicas.clear()
        self.instances.clear()


class _Carrying:
    """One call of :meth:`Apply.carry_out`: the instances it started, by the placeholder ids
    decide gave them, and what could not be done."""

    def __init__(self, apply: Apply, plans: dict[DeploymentKey, DeploymentPlan]) -> None:
        self.apply, self.journal, self.plans = apply, apply.journal, plans
        self.new: dict[tuple[PoolKey, str], Instance] = {}
        self.outcome = Outcome()

    def halted(self, key: DeploymentKey) -> bool:
        return key in self.outcome.problems or key in self.outcome.errors

    def do(self, action: Action) -> None:
        if isinstance(action, Problem):
            self.journal.problem(self.plans[action.deployment], action.text, action.quiet)
        elif isinstance(action, Solved):
            self.journal.solved(action.deployment, action.text)
        elif isinstance(action, Event):
            self.event(action)
        elif isinstance(action, Forget):
            self.apply.forget(action.replica_id)
        elif isinstance(action, Drop):
            self.apply.drop(action.instance_id, action.why)
        elif isinstance(action, Stop):
            self.stop(action)
        elif isinstance(action, Start):
            self.start_apart(action)
        elif isinstance(action, Release):
            self.apply.release(action.instance_id)
        else:
            self.cannot_decide(action)

    def event(self, action: Event) -> None:
        replica = self.apply.replicas.get(action.replica_id)
        if replica is not None:
            self.journal.replica_event(replica, action.text, action.warn)
        else:
            self.journal.deployment_event(self.plans[action.deployment], action.text)

    def stop(self, action: Stop) -> None:
        replica = self.apply.replicas.get(action.replica_id)
        if replica is not None and not self.halted(replica.deployment):
            self.apply.stop(replica, action.why)

    def cannot_decide(self, action: CannotDecide) -> None:
        """Decide could not decide for the deployment: its problem says why, now."""
        self.outcome.errors[action.deployment] = action.error
        self.journal.problem(self.plans[action.deployment], failure(reason_of(action.error)))

    def start_apart(self, action: Start) -> None:
        """Start a replica; what the provider could not do halts the deployment's actions."""
        plan = self.plans[action.deployment]
        if self.halted(plan.key):
            return
        try:
            self.start(plan, action)
        except NoCapacity as exc:
            pool = self.pool_of(plan, action)
            self.outcome.problems[plan.key] = f"no room for a replica in {pool_name(pool)}: {exc}"
            if action.placement.new_instance:
                self.outcome.no_room.add(pool.key)
        except Exception as exc:
            self.outcome.problems[plan.key] = failure(reason_of(exc))
            self.outcome.errors[plan.key] = exc

    def start(self, plan: DeploymentPlan, action: Start) -> None:
        placement, pool = action.placement, self.pool_of(plan, action)
        assert placement.instance_id is not None
        if placement.new_instance:
            slot = (pool.key, placement.instance_id)
            if slot not in self.new:
                self.new[slot] = self.apply.start_instance(plan, pool)
            instance = self.new[slot]
        else:
            instance = self.apply.instances[placement.instance_id].instance
        self.apply.start_replica(plan, pool, instance, placement.devices)

    @staticmethod
    def pool_of(plan: DeploymentPlan, action: Start) -> PoolPlan:
        return next(
            p
            for p in plan.pools
            if (p.key.compute_cluster_id, p.key.nodepool_id) == action.placement.nodepool
        )
