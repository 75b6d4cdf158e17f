"""What decide says and apply does: one round's actions, in the order apply carries them out.

Records (apply writes them to the journal, nothing runs or stops):

- :class:`Problem`: a deployment's problem now (an event when it changes, unless ``quiet``);
- :class:`Solved`: its problem goes, without an event (only if it is still ``text``, when given);
- :class:`Event`: something to say in a deployment's events (under a replica's runner record
  when ``replica_id`` names one).

Changes to what runs (apply asks the providers):

- :class:`Forget`: a replica its provider reported ended: its token stops working, its log goes;
- :class:`Drop`: an instance its provider reported lost: forgotten, never stopped;
- :class:`Stop`: a replica to drain, and why;
- :class:`Start`: a replica of a deployment where placement put it (maybe on a new instance,
  named by a placeholder id that later starts of the same round may name too);
- :class:`Release`: an instance no replica uses, to stop;
- :class:`CannotDecide`: decide could not decide for a deployment (a bug, or its load could not be
  read): it becomes the deployment's problem, and its actions are none this round.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from orchard.orchestration.placement import Placement

DeploymentKey = tuple[str, str]  # (user id, deployment id)


@dataclass(frozen=True)
class Problem:
    deployment: DeploymentKey
    text: str
    quiet: bool = False  # an Event already said it: no event for the change


@dataclass(frozen=True)
class Solved:
    deployment: DeploymentKey
    text: str | None = None  # the problem goes only if it is still this (None: whatever it is)


@dataclass(frozen=True)
class Event:
    deployment: DeploymentKey
    text: str
    replica_id: str = ""  # recorded under this replica's runner record ("": the deployment's)
    warn: bool = False  # also a warning in the server's log


@dataclass(frozen=True)
class Forget:
    replica_id: str


@dataclass(frozen=True)
class Drop:
    instance_id: str
    why: str


@dataclass(frozen=True)
class Stop:
    replica_id: str
    why: str


@dataclass(frozen=True)
class Start:
    deployment: DeploymentKey
    placement: Placement  # placed: nodepool and instance (maybe a new one's placeholder id)


@dataclass(frozen=True)
class Release:
    instance_id: str


@dataclass(frozen=True)
class CannotDecide:
    deployment: DeploymentKey
    error: Exception = field(compare=False)


def failure(reason: str) -> str:
    """The problem of a deployment Orchard failed to run for ``reason``."""
    return (
        f"Orchard failed to run this deployment ({reason}); it tries again every round; the "
        "server log has the details"
    )


Action = Problem | Solved | Event | Forget | Drop | Stop | Start | Release | CannotDecide
