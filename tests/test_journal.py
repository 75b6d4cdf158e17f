"""The journal: events are stamped by the injected wall clock and kept per deployment."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from orchard.orchestration.journal import Journal
from tests.test_reconciler import plan

A_YEAR = 86400.0 * 365


def test_events_are_stamped_by_the_injected_wall_clock(tmp_path: Path) -> None:
    journal = Journal(logging.getLogger("test"), lambda: A_YEAR)
    deployment = plan(tmp_path)
    journal.deployment_event(deployment, "desired replicas: 0 → 1")
    stamped = f"{time.strftime('%H:%M:%S', time.localtime(A_YEAR))} desired replicas: 0 → 1"
    assert list(journal.of(deployment.key).events) == [stamped]
    [(ref, lines)] = journal.take()
    assert (ref.log_type, lines) == ("runner.events", [stamped])
    assert journal.take() == []


def test_a_problem_is_an_event_only_when_it_changes(tmp_path: Path) -> None:
    journal = Journal(logging.getLogger("test"), lambda: A_YEAR)
    deployment = plan(tmp_path)
    for problem in ("no room", "no room", "quota", "quota"):
        journal.problem(deployment, problem)
    assert [e.split(" ", 1)[1] for e in journal.of(deployment.key).events] == [
        "no room",
        "quota",
    ]
    assert journal.of(deployment.key).problem == "quota"


def test_a_solved_problem_goes_without_an_event_only_if_it_is_still_that(tmp_path: Path) -> None:
    journal = Journal(logging.getLogger("test"), lambda: A_YEAR)
    deployment = plan(tmp_path)
    journal.problem(deployment, "blocked")
    journal.problem(deployment, "no room", quiet=True)  # an event said it already
    journal.solved(deployment.key, "blocked")  # no longer that: it stays
    assert journal.of(deployment.key).problem == "no room"
    journal.solved(deployment.key)
    assert journal.of(deployment.key).problem == ""
    assert [e.split(" ", 1)[1] for e in journal.of(deployment.key).events] == ["blocked"]
