"""The build queue: turns an uploaded model version into a built one, in the background.

``submit`` starts a build task for a version whose package is stored; the task builds (or
reuses) its environment, loads the model there to collect its method signatures, and moves
the version to MODEL_TRAINED, or to MODEL_BUILDING_FAILED with the reason in its status and the
tools' output in its build log. On start, ``resume`` restarts builds a previous server left
unfinished and fails uploads it left half-received.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from clarifai_grpc.grpc.api.status import status_code_pb2 as sc
from sqlalchemy.orm import Session

from orchard import errors
from orchard.ids import VersionRef
from orchard.packaging import REQUIREMENTS
from orchard.packaging.inspect import run_inspection
from orchard.services import logs
from orchard.services import models as model_service
from orchard.services.builds import BuildError, BuildLog, EnvBuilder, choose_interpreter
from orchard.services.packages import PackageStore
from orchard.store import Store

log = logging.getLogger(__name__)


class BuildQueue:
    def __init__(self, store: Store, packages: PackageStore, builder: EnvBuilder) -> None:
        self.store, self.packages, self.builder = store, packages, builder
        self._tasks: dict[VersionRef, asyncio.Task[None]] = {}

    def submit(self, ref: VersionRef) -> None:
        if ref not in self._tasks:
            task = asyncio.create_task(self._build(ref), name=f"build-{ref.version_id}")
            self._tasks[ref] = task
            task.add_done_callback(lambda _: self._tasks.pop(ref, None))

    async def wait(self, ref: VersionRef) -> None:
        """Until the build of ``ref`` (if any is running) ends."""
        task = self._tasks.get(ref)
        if task is not None:
            await asyncio.shield(task)

    async def resume(self) -> None:
        def pending(session: Session) -> list[VersionRef]:
            for row in model_service.versions_with_status(session, sc.MODEL_UPLOADING):
                model_service.set_version_status(
                    session,
                    VersionRef.of(row),
                    sc.MODEL_UPLOADING_FAILED,
                    "the server stopped before the upload finished; upload again",
                )
            return [
                VersionRef.of(row)
                for row in model_service.versions_with_status(session, sc.MODEL_BUILDING)
            ]

        for ref in await asyncio.to_thread(self._in_session, pending):
            self.submit(ref)

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    def _in_session(self, work: Any) -> Any:
        with self.store.session() as session:
            return work(session)

    async def _signatures(
        self, key: str, digest: str, package_dir: Path, out: BuildLog
    ) -> list[dict[str, Any]] | None:
        """Load model.py in the environment (once per package and environment) for its
        method signatures; None for a model on the official SDK."""
        cached = self.builder.env_path(key) / "inspections" / f"{digest}.json"
        if cached.exists():
            out.line("model.py was loaded in this environment before; reusing its signatures")
            result: list[dict[str, Any]] | None = json.loads(cached.read_text())
            return result
        out.line("loading 1/model.py in the environment to collect its method signatures")
        await out.flush()
        env_python = str(self.builder.env_path(key) / "bin" / "python")
        signatures = await asyncio.to_thread(
            run_inspection, env_python, package_dir, stub_missing=False
        )
        cached.parent.mkdir(exist_ok=True)
        cached.write_text(json.dumps(signatures))
        return signatures

    def _log_writer(self, ref: VersionRef) -> BuildLog:
        log_ref = logs.LogRef(ref.user_id, ref.model_id, ref.version_id)

        def write(lines: list[str]) -> None:
            self._in_session(lambda session: logs.append_logs(session, log_ref, lines))

        return BuildLog(write)

    async def _build(self, ref: VersionRef) -> None:
        out = self._log_writer(ref)
        code, description, columns = sc.MODEL_BUILD_UNEXPECTED_ERROR, "", {}
        try:
            columns = await self._steps(ref, out)
            code, description = sc.MODEL_TRAINED, "Model is built and ready to deploy"
            out.line(description)
        except (BuildError, errors.OrchardError) as exc:
            code, description = sc.MODEL_BUILDING_FAILED, f"build failed: {exc}"
            out.line(description)
        except asyncio.CancelledError:
            return  # the server is stopping; resume() picks the build up again
        except Exception:
            log.exception("unexpected error while building %s", ref)
            description = "internal error while building; the server log has the details"
            out.line(description)
        await out.flush()
        await asyncio.to_thread(
            self._in_session,
            lambda session: model_service.set_version_status(
                session, ref, code, description, **columns
            ),
        )

    async def _steps(self, ref: VersionRef, out: BuildLog) -> dict[str, Any]:
        digest = await asyncio.to_thread(
            self._in_session, lambda s: model_service.version_row(s, ref).package_digest
        )
        out.line(
            f"building version {ref.version_id} of model {ref.model_id} "
            f"(package sha256 {digest[:12]})"
        )
        package = await asyncio.to_thread(self.packages.unpacked_package, digest)
        python = choose_interpreter(
            package.config.build_info.python_version, self.builder.settings, out.line
        )
        key = await self.builder.ensure_env(python, package.root / REQUIREMENTS, out)
        signatures = await self._signatures(key, digest, package.root, out)
        columns: dict[str, Any] = {"env_key": key}
        if signatures is not None:
            spec = await asyncio.to_thread(
                self._in_session, lambda s: dict(model_service.version_row(s, ref).spec)
            )
            columns["spec"] = spec | {"method_signatures": signatures}
            out.line("methods: " + ", ".join(s["name"] for s in signatures))
        return columns
