"""The last step of a round, and the only code that changes what the providers run: it tells
them the nodepools, starts and stops instances and replicas, and keeps what it started (the
replicas with their tokens, the instances) for the next rounds to observe. What it does is
written to the :class:`~orchard.orchestration.journal.Journal`. A provider that has no room
(:class:`~orchard.providers.base.NoCapacity`) ends that deployment's actions;
:meth:`Apply.carry_out` returns the nodepool, which the caller records (``no_room``) for the
next round's placement rather than acting on it now."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import uuid
from collections.abc import Callable, Sequence

from orchard.dispatch.sessions import PoolKey
from orchard.orchestration.capacity import Held
from orchard.orchestration.decide import Action, Event, Problem, Stop
from orchard.orchestration.journal import Journal
from orchard.orchestration.launch import replica_launch
from orchard.orchestration.removal import spare_instances
from orchard.orchestration.resources import NodepoolKey
from orchard.orchestration.snapshot import DeploymentPlan, PoolPlan
from orchard.orchestration.world import OrchestratorSettings, Replica, pool_name
from orchard.providers import ProviderRegistry
from orchard.providers.base import Instance, NoCapacity, NodepoolInfo


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
        self.instances: dict[str, Held] = {}  # id: provider id, nodepool, instance

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

    def carry_out(self, plan: DeploymentPlan, actions: Sequence[Action]) -> PoolKey | None:
        """Do what :func:`~orchard.orchestration.decide.decide` said for ``plan``, in order. A
        provider with no room stops it there: the problem says so, and the nodepool is returned
        when it had no new instance (a fact for the next round)."""
        pools = {(p.key.compute_cluster_id, p.key.nodepool_id): p for p in plan.pools}
        started: dict[tuple[NodepoolKey, str], Instance] = {}
        for action in actions:
            if isinstance(action, Problem):
                self.journal.problem(plan, action.text)
            elif isinstance(action, Event):
                self.journal.deployment_event(plan, action.text)
            elif isinstance(action, Stop):
                self.stop(self.replicas[action.replica_id], action.why)
            else:
                placement = action.placement
                assert placement.nodepool is not None and placement.instance_id is not None
                pool = pools[placement.nodepool]
                try:
                    if placement.new_instance:
                        slot = (placement.nodepool, placement.instance_id)
                        if slot not in started:
                            started[slot] = self.start_instance(plan, pool)
                        instance = started[slot]
                    else:
                        instance = self.instances[placement.instance_id][2]
                    self.start_replica(plan, pool, instance, placement.devices)
                except NoCapacity as exc:
                    self.journal.problem(plan, f"no room for a replica in {pool_name(pool)}: {exc}")
                    return pool.key if placement.new_instance else None
        return None

    def start_instance(self, plan: DeploymentPlan, pool: PoolPlan) -> Instance:
        provider = self.providers.get(pool.provider)
        assert provider is not None
        instance = provider.start_instance(pool_name(pool), pool.shape)
        self.instances[instance.id] = (pool.provider, pool.key, instance)
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
        self.replicas[replica_id] = replica
        self.journal.replica_event(
            replica, f"starting replica {replica_id} on instance {instance.id}"
        )

    def stop(self, replica: Replica, why: str) -> None:
        """Ask ``replica`` to drain and exit (once); it is forgotten when it has ended."""
        if replica.stopping:
            return
        replica.stopping = True
        provider = self.providers.get(replica.plan_pool.provider)
        if provider is not None:
            provider.stop_replica(replica.id, self.settings.drain_grace)
        self.journal.replica_event(replica, f"stopping replica {replica.id}: {why}")

    def forget(self, replica: Replica) -> None:
        """An ended replica: its token stops working and its log file goes."""
        self.replicas.pop(replica.id, None)
        self.tokens.pop(replica.token, None)
        with contextlib.suppress(OSError):
            replica.log_path.unlink()

    def release_idle_instances(self, plans: Sequence[DeploymentPlan]) -> None:
        """Stop the instances no replica uses, down to each nodepool's ``min_instances``."""
        keep: dict[PoolKey, int] = {}
        for plan in plans:
            for pool in plan.pools:
                keep[pool.key] = max(keep.get(pool.key, 0), pool.min_instances)
        used = {r.instance.id for r in self.replicas.values()}
        pools = {instance_id: held[1] for instance_id, held in self.instances.items()}
        for instance_id in spare_instances(pools, used, keep):
            provider_id, _, _ = self.instances.pop(instance_id)
            provider = self.providers.get(provider_id)
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
