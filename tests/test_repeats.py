"""A failure that repeats every round is logged once, then counted."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy.exc import OperationalError

from orchard import errors
from orchard.orchestration.repeats import Repeats, reason_of

LOG = logging.getLogger("tests.repeats")

# (what happens each round, what is logged, the count at the end)
TABLE = {
    "once, then counted": (["a", "a", "a"], ["round failed: a"], 3),
    "a new reason is logged": (
        ["a", "a", "b"],
        ["round failed: a", "round failed: b"],
        1,
    ),
    "a recovery says how often": (
        ["a", "a", None],
        ["round failed: a", "round works again, after failing 2 time(s) in a row"],
        0,
    ),
    "after a recovery it is new again": (
        ["a", None, "a"],
        [
            "round failed: a",
            "round works again, after failing 1 time(s) in a row",
            "round failed: a",
        ],
        1,
    ),
    "success says nothing": ([None, None], [], 0),
}


@pytest.mark.parametrize(("rounds", "logged", "count"), TABLE.values(), ids=TABLE.keys())
def test_a_failure_is_logged_when_new(
    caplog: pytest.LogCaptureFixture, rounds: list[str | None], logged: list[str], count: int
) -> None:
    caplog.set_level(logging.INFO, logger=LOG.name)
    repeats = Repeats(LOG)
    for reason in rounds:
        if reason is None:
            repeats.succeeded("k", "round")
        else:
            repeats.failed("k", "round", reason)
    messages = [
        r.getMessage().removesuffix(" (logged once; repeats are counted)") for r in caplog.records
    ]
    assert messages == logged
    assert repeats.count("k") == count


def test_the_traceback_comes_once_and_only_for_the_unexpected(
    caplog: pytest.LogCaptureFixture,
) -> None:
    repeats = Repeats(LOG)
    for _ in range(3):
        repeats.failed("bug", "round", "KeyError: 'x'", KeyError("x"))
    repeats.failed("known", "round", "bad", errors.ModelInvalid("bad"))
    bug, known = caplog.records
    assert bug.exc_info is not None and known.exc_info is None


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (RuntimeError("boom"), "RuntimeError: boom"),
        (KeyError("x"), "KeyError: 'x'"),
        (ValueError(""), "ValueError"),
        (errors.DeploymentInvalid("bad\nmore"), "DeploymentInvalid: bad"),
        # a database error's later lines carry the statement's parameters, which change
        (
            OperationalError("INSERT ...", {"at": 1}, Exception("database is locked")),
            "OperationalError: (builtins.Exception) database is locked",
        ),
    ],
)
def test_the_reason_is_what_stays_the_same(exc: BaseException, reason: str) -> None:
    assert reason_of(exc) == reason


def test_forget_drops_what_is_gone() -> None:
    repeats = Repeats(LOG)
    repeats.failed("gone", "x", "r")
    repeats.failed("kept", "x", "r")
    repeats.forget({"kept"})
    assert (repeats.count("gone"), repeats.count("kept")) == (0, 1)
