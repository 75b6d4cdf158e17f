"""What the orchestrator reads each round, over a real store: a deployment it cannot run is
planned as blocked (or unplanned) with the reason and the fix, and never stops the others."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from clarifai_grpc.grpc.api.status import status_code_pb2 as sc
from sqlalchemy import select

from orchard.orchestration import snapshot, store_edge
from orchard.orchestration.snapshot import DeploymentPlan
from orchard.orchestration.store_edge import make_needed
from orchard.services import models as model_service
from orchard.store.models import DeploymentRow, RunnerRow
from orchard.testing import ServerThread
from tests.resources import make_cluster, make_deployment, make_model, make_nodepool, make_stack


@pytest.fixture
def stored(server: ServerThread, api: Any) -> Iterator[ServerThread]:
    """Deployments of a server that does not orchestrate, as they could be stored before it
    refused versions it cannot run: ``ghost`` (a version made without an upload), ``building``
    (a version still building), ``broken`` (a spec that no longer validates) and ``dev`` (on a
    local-dev cluster, which the orchestrator leaves alone)."""
    make_stack(api)
    make_deployment(api, "ghost")
    make_model(api, "m2")
    with store_session(server) as session:
        model = model_service.get_model(session, api.user_id, "app", "m2")
        version = model_service.create_model_version(
            session, model, {}, status_code=sc.MODEL_BUILDING
        )
        building = version.id
    make_deployment(api, "building", model="m2", version=building)
    make_model(api, "m3")
    make_deployment(api, "broken", model="m3")
    with store_session(server) as session:
        row = session.get(DeploymentRow, (api.user_id, "broken"))
        assert row is not None
        row.spec = row.spec | {"autoscale_config": {"max_replicas": -1}}
    make_cluster(api, "dev", cluster_type="local-dev")
    make_nodepool(api, "dev", "devnp")
    make_model(api, "m4")
    make_deployment(
        api, "dev", model="m4", nodepools=[{"id": "devnp", "compute_cluster": {"id": "dev"}}]
    )
    yield server


def store_session(server: ServerThread) -> Any:
    assert server.server is not None
    return server.server.store.session()


def read(server: ServerThread, unmade: snapshot.Unmade | None = None) -> snapshot.Snapshot:
    assert server.server is not None
    runtime = server.server.runtime
    envs = server.settings.home / "envs"
    with store_session(server) as session:
        return snapshot.read(session, runtime.providers, runtime.packages, envs, unmade)


def load(server: ServerThread) -> dict[str, DeploymentPlan]:
    """As the store edge loads: read, make what the read found lacking, read again."""
    assert server.server is not None
    first = read(server)
    with store_session(server) as session:
        unmade = make_needed(session, first.needs, server.server.runtime.packages)
    again = read(server, unmade)
    assert not again.needs
    return {plan.id: plan for plan in again.plans}


def runner_rows(server: ServerThread) -> dict[str, str]:
    """The runner rows the orchestrator made: deployment id to runner id."""
    with store_session(server) as session:
        return {
            r.spec["metadata"][snapshot.MANAGED]: r.id for r in session.scalars(select(RunnerRow))
        }


def test_a_read_changes_nothing_and_says_what_the_store_lacks(stored: ServerThread) -> None:
    first = read(stored)
    assert runner_rows(stored) == {}
    assert {n.deployment[1] for n in first.needs.runners} == {"ghost", "building", "broken"}
    assert first.plans == ()  # none has its runner rows yet
    load(stored)
    assert set(runner_rows(stored)) == {"ghost", "building", "broken"}
    assert not read(stored).needs


def test_a_deployment_that_cannot_run_is_blocked_and_the_others_are_planned(
    stored: ServerThread,
) -> None:
    plans = load(stored)
    assert set(plans) == {"ghost", "building", "broken"}  # dev is not orchestrated
    ghost = plans["ghost"]
    assert ghost.planned and ghost.package is None
    assert "was made without an upload (it has no package)" in ghost.blocked
    assert "`orchard model upload`" in ghost.blocked and "local-dev" in ghost.blocked
    assert "is not built yet" in plans["building"].blocked
    broken = plans["broken"]
    assert not broken.planned
    assert broken.blocked.startswith("Orchard cannot plan deployment 'broken' (ValidationError")
    assert broken.blocked.endswith("); change it with PatchDeployments or delete it")
    assert broken.error is not None  # logged once, with its traceback
    assert [p.key.nodepool_id for p in broken.pools] == ["np"]  # where its events go


def test_the_runner_rows_of_a_deployment_that_cannot_be_planned_stay(
    stored: ServerThread,
) -> None:
    with store_session(stored) as session:
        row = session.get(DeploymentRow, (stored.user_id, "broken"))
        assert row is not None
        spec, row.spec = row.spec, row.spec | {"autoscale_config": {}}  # plannable for a round
    load(stored)
    made = runner_rows(stored)
    with store_session(stored) as session:
        row = session.get(DeploymentRow, (stored.user_id, "broken"))
        assert row is not None
        row.spec = spec  # broken again
    assert set(made) == {"ghost", "building", "broken"}
    load(stored)
    assert runner_rows(stored) == made


def test_a_runner_row_that_cannot_be_made_leaves_its_deployment_unplanned(
    stored: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = store_edge.make_runner

    def refuse_ghost(session: Any, need: snapshot.RunnerNeed) -> Any:
        if need.deployment[1] == "ghost":
            raise ValueError("no runner for you")
        return made(session, need)

    monkeypatch.setattr(store_edge, "make_runner", refuse_ghost)
    plans = load(stored)
    assert not plans["ghost"].planned
    assert "(ValueError: no runner for you)" in plans["ghost"].blocked
    assert plans["building"].planned and set(runner_rows(stored)) == {"building", "broken"}
