"""The orchestrator's reads and writes of the store, each in a worker thread's session.

:meth:`StoreEdge.load` reads the deployments to run (:func:`~orchard.orchestration.snapshot.read`,
which only reads); when the read found the store lacking (a runner row to make, runner rows to
delete, a package to unpack) it makes those (:func:`make_needed`) and reads again, in the same
transaction. :meth:`StoreEdge.append_logs` writes the journal's
lines."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from orchard.configs import RunnerSpec
from orchard.orchestration import snapshot
from orchard.orchestration.snapshot import DeploymentPlan, RunnerNeed, StoreNeeds, Unmade
from orchard.providers import ProviderRegistry
from orchard.services import logs, runners
from orchard.services.packages import PackageStore
from orchard.store.models import DeploymentRow, ModelVersionRow, NodepoolRow, RunnerRow

T = TypeVar("T")
InSession = Callable[[Callable[[Session], T]], Awaitable[T]]


class StoreEdge:
    """Loads the orchestrated deployments and appends log lines."""

    def __init__(
        self,
        in_session: InSession[Any],
        providers: ProviderRegistry,
        packages: PackageStore,
        envs: Path,
    ) -> None:
        self.in_session, self.providers, self.packages, self.envs = (
            in_session,
            providers,
            packages,
            envs,
        )

    async def load(self) -> list[DeploymentPlan]:
        return list(await self.in_session(self._load))

    def _load(self, session: Session) -> tuple[DeploymentPlan, ...]:
        """Read; when the read found the store lacking, make what it lacks and read again (one
        transaction: a new deployment's first round costs one commit)."""
        read = snapshot.read(session, self.providers, self.packages, self.envs)
        if not read.needs:
            return read.plans
        unmade = make_needed(session, read.needs, self.packages)
        session.flush()
        return snapshot.read(session, self.providers, self.packages, self.envs, unmade).plans

    async def append_logs(self, entries: list[tuple[logs.LogRef, list[str]]]) -> None:
        def write(session: Session) -> None:
            for ref, lines in entries:
                logs.append_logs(session, ref, lines)

        await self.in_session(write)


def make_needed(session: Session, needs: StoreNeeds, packages: PackageStore) -> Unmade:
    """Make what a read found the store lacking: runner rows made or deleted, packages
    unpacked. Returns what could not be made, with why, for the next read (one never stops
    the others); only what the store raises fails it."""
    runners_unmade: dict[tuple[str, str], Exception] = {}
    for need in needs.runners:
        try:
            make_runner(session, need)
        except SQLAlchemyError:
            raise
        except Exception as exc:
            runners_unmade[need.deployment] = exc
    for runner_id in needs.stale:
        row = session.get(RunnerRow, runner_id)
        if row is not None:
            session.delete(row)
    packages_unmade = {}
    for digest in needs.packages:
        try:
            packages.unpacked_package(digest)
        except Exception as exc:  # a package gone or damaged on disk
            packages_unmade[digest] = type(exc).__name__
    return Unmade(packages_unmade, runners_unmade)


def make_runner(session: Session, need: RunnerNeed) -> RunnerRow | None:
    """The runner row whose replicas serve a deployment from a nodepool (None: the deployment,
    nodepool or version is gone since the read)."""
    deployment = session.get(DeploymentRow, need.deployment)
    key = need.nodepool
    pool = session.get(NodepoolRow, (key.user_id, key.compute_cluster_id, key.nodepool_id))
    version = session.get(ModelVersionRow, need.version)
    if deployment is None or pool is None or version is None:
        return None
    spec = RunnerSpec.model_validate(
        {
            "description": f"replicas of deployment {deployment.id}, run by Orchard",
            "metadata": {runners.MANAGED: deployment.id},
            "worker": {
                "model": {
                    "id": version.model_id,
                    "app_id": version.app_id,
                    "user_id": version.user_id,
                    "model_version": {"id": version.id},
                }
            },
            "num_replicas": 0,
        }
    )
    return runners.create_runner(
        session, pool, spec, f"deployment {deployment.id}", orchestrator=True
    )
