"""Failures that repeat every round, logged once.

The orchestrator runs a round every second; a failure that stays (a deployment it cannot run,
a full disk) would otherwise log the same lines every second, burying everything else (and
filling the pipe of whoever reads the server's output but does not keep up). A failure is
logged when it is new, with its reason (and its traceback, once, when it is not an
:class:`~orchard.errors.OrchardError`: those are expected and say all there is to say); while
it repeats with the same reason it is only counted; when it stops, one line says how many times
it happened.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from dataclasses import dataclass

from orchard import errors


@dataclass
class _Failing:
    reason: str
    count: int


def reason_of(exc: BaseException) -> str:
    """The first line of what ``exc`` says: what stays the same while a failure repeats
    (later lines of a database error carry the statement's parameters)."""
    text = exc.message if isinstance(exc, errors.OrchardError) else str(exc)
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class Repeats:
    """What is failing now, by key, and how many times in a row."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self._failing: dict[Hashable, _Failing] = {}

    def failed(
        self, key: Hashable, what: str, reason: str, exc: BaseException | None = None
    ) -> bool:
        """``what`` (named by ``key``) failed for ``reason``; logs it only when it is new (or
        its reason changed). Returns whether it logged."""
        known = self._failing.get(key)
        if known is not None and known.reason == reason:
            known.count += 1
            return False
        self._failing[key] = _Failing(reason, 1)
        unexpected = exc is not None and not isinstance(exc, errors.OrchardError)
        self.log.warning(
            "%s failed: %s (logged once; repeats are counted)",
            what,
            reason,
            exc_info=exc if unexpected else None,
        )
        return True

    def succeeded(self, key: Hashable, what: str) -> None:
        """``what`` works again: say how many times it failed, and forget it."""
        known = self._failing.pop(key, None)
        if known is not None:
            self.log.info("%s works again, after failing %d time(s) in a row", what, known.count)

    def count(self, key: Hashable) -> int:
        """How many times in a row ``key`` has failed (0: it is not failing)."""
        known = self._failing.get(key)
        return known.count if known is not None else 0

    def forget(self, keep: set[Hashable]) -> None:
        """Drop what is failing for keys not in ``keep`` (deleted deployments)."""
        for key in [k for k in self._failing if k not in keep]:
            del self._failing[key]
