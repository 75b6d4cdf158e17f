"""The orchestrator's reads and writes of the store, each in a worker thread's session."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from orchard.orchestration import snapshot
from orchard.orchestration.snapshot import DeploymentPlan
from orchard.providers import ProviderRegistry
from orchard.services import logs
from orchard.services.packages import PackageStore

T = TypeVar("T")
InSession = Callable[[Callable[[Session], T]], Awaitable[T]]


class StoreEdge:
    """Loads the orchestrated deployments (:func:`~orchard.orchestration.snapshot.load`) and
    appends log lines."""

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
        return list(
            await self.in_session(
                lambda session: snapshot.load(session, self.providers, self.packages, self.envs)
            )
        )

    async def append_logs(self, entries: list[tuple[logs.LogRef, list[str]]]) -> None:
        def write(session: Session) -> None:
            for ref, lines in entries:
                logs.append_logs(session, ref, lines)

        await self.in_session(write)
