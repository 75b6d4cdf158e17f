"""Fair share: per-user quotas on what a user's replicas hold together. Pure.

The operator sets them when starting the server, for every user with ``orchard serve
--quota-replicas N --quota-cpus X --quota-memory 16Gi --quota-gpus N``, and per user with
``--quotas FILE``::

    default: {replicas: 8, cpus: 16, memory: 64Gi, gpus: 2}   # every user
    users:
      alice: {gpus: 4}      # the default, with 4 GPUs
      bob: {cpus: null}     # the default, without a CPU limit

Rules:

- A limit that is not set is no limit. The options replace the file's ``default`` field by
  field; a user's entry replaces the resulting default field by field (``null`` lifts a limit).
- The operator (the bootstrap user, who runs the server and is trusted) has no limits unless
  ``users`` names it; then it is a user like any other.
- What counts: replicas, and their CPUs, memory (bytes) and GPUs as the model version asks for
  one replica (``inference_compute_info``: the ``*_requests`` quantities when given, else the
  limits, as placement reads them). A replica that shares a GPU counts its GPUs whole.

Two checks use them. At create and patch (``services/quotas.py``), the *floors* of a user's
deployments (:func:`floor_of`) must fit: a write that raises a resource's total over its limit
is refused (:func:`floor_excess`); one that leaves it or lowers it passes, so a user whom a
lowered quota left over it can still edit and shrink. At run time the orchestrator starts no
replica beyond the user's :func:`headroom`: what all the user's replicas hold, across its
deployments, against the quota; a capped deployment says why in its events.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import Field, field_validator

from orchard import errors
from orchard.configs import AutoscaleSpec, ComputeInfoSpec, Spec, check_id, validate
from orchard.quantities import byte_count, cpu_count, format_bytes

RESOURCES = ("replicas", "cpus", "memory", "gpus")
OPTIONS = {name: f"--quota-{name}" for name in RESOURCES}  # of `orchard serve`
_EPSILON = 1e-9


@dataclass(frozen=True)
class Usage:
    """What replicas hold together (``memory`` in bytes)."""

    replicas: int = 0
    cpus: float = 0.0
    memory: int = 0
    gpus: int = 0

    @classmethod
    def of_compute_info(cls, info: ComputeInfoSpec) -> Usage:
        """One replica of a model whose ``inference_compute_info`` is ``info``: the
        ``*_requests`` quantities when given, else the limits (as placement's request)."""
        cpus, memory = info.reserved()
        return cls(1, cpus, memory, info.num_accelerators)

    def times(self, count: int) -> Usage:
        return Usage(
            self.replicas * count, self.cpus * count, self.memory * count, self.gpus * count
        )

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.replicas + other.replicas,
            self.cpus + other.cpus,
            self.memory + other.memory,
            self.gpus + other.gpus,
        )

    def amount(self, name: str) -> float:
        value: float = getattr(self, name)
        return value


def total(usages: Iterable[Usage]) -> Usage:
    return sum(usages, Usage())


@dataclass(frozen=True)
class Quota:
    """One user's limits (``memory`` in bytes); None: no limit."""

    replicas: int | None = None
    cpus: float | None = None
    memory: int | None = None
    gpus: int | None = None

    def limit(self, name: str) -> float | None:
        value: float | None = getattr(self, name)
        return value

    @property
    def unlimited(self) -> bool:
        return all(self.limit(name) is None for name in RESOURCES)


NO_LIMITS = Quota()


def describe(name: str, amount: float) -> str:
    """An amount of one resource for people: "4 replicas", "0.5 CPUs", "16Gi of memory"."""
    if name == "memory":
        return f"{format_bytes(int(amount))} of memory"
    unit = {"replicas": "replica", "cpus": "CPU", "gpus": "GPU"}[name]
    return f"{amount:g} {unit}{'' if amount == 1 else 's'}"


def raise_hint(name: str) -> str:
    """The next step when a user is held by its ``name`` limit."""
    return (
        f"ask the operator to raise it (orchard serve {OPTIONS[name]}, or the quotas file) or "
        "lower min_replicas of another deployment"
    )


# -- run time: how many more replicas may start --------------------------------------------


@dataclass(frozen=True)
class Headroom:
    """How many more replicas fit (None: no limit binds them) and which limit says so."""

    replicas: int | None
    resource: str = ""
    reason: str = ""  # names the quota and its use


def headroom(user: str, quota: Quota, used: Usage, each: Usage) -> Headroom:
    """How many more replicas of ``each`` fit beside ``used`` in ``user``'s ``quota``: the
    fewest any limit allows; a resource ``each`` does not need is never the bound."""
    room = Headroom(None)
    for name in RESOURCES:
        limit, need = quota.limit(name), each.amount(name)
        if limit is None or need <= 0:
            continue
        fits = max(0, math.floor((limit - used.amount(name)) / need + _EPSILON))
        if room.replicas is None or fits < room.replicas:
            room = Headroom(fits, name, _room(user, name, limit, used.amount(name), need, fits))
    return room


def _room(user: str, name: str, limit: float, used: float, need: float, fits: int) -> str:
    quota = f"its quota of {describe(name, limit)} ({describe(name, used)} in use"
    if fits:
        more = f"{fits} more replica{'' if fits == 1 else 's'}"
        return f"user {user!r} has room for {more} under {quota}, {describe(name, need)} each)"
    if used + _EPSILON >= limit:
        return f"user {user!r} is at {quota})"
    return f"user {user!r} is near {quota}; one replica needs {describe(name, need)})"


def capped(room: Headroom, wanted: int) -> str:
    """Why a deployment starts ``room.replicas`` of the ``wanted`` replicas, and what to do."""
    return (
        f"{room.reason}: starting {room.replicas} of {wanted} more replicas wanted; "
        f"{raise_hint(room.resource)}"
    )


# -- create and patch: the floors of a user's deployments ----------------------------------


def floor_of(autoscale: AutoscaleSpec, disabled: bool) -> int:
    """The replicas a deployment keeps running while idle: ``min_replicas +
    soft_min_replicas`` capped by ``max_replicas`` (the autoscaler's floor); 0 when disabled."""
    if disabled:
        return 0
    return min(autoscale.min_replicas + autoscale.soft_min_replicas, autoscale.max_replicas)


def floor_excess(
    user: str, deployment: str, quota: Quota, others: Usage, before: Usage, after: Usage
) -> str:
    """Why writing ``deployment`` (its floor going from ``before`` to ``after``, beside the
    floors of the user's ``others``) breaks the quota; "" when it does not. A resource counts
    against the write only when the write raises it."""
    for name in RESOURCES:
        limit = quota.limit(name)
        grown = after.amount(name) > before.amount(name) + _EPSILON
        held, claim = others.amount(name), after.amount(name)
        if limit is None or not grown or held + claim <= limit + _EPSILON:
            continue
        floor = describe("replicas", after.replicas)
        holding = "" if name == "replicas" else f" holding {describe(name, claim)}"
        return (
            f"deployment {deployment!r} would keep a floor of {floor}{holding} "
            f"(min_replicas + soft_min_replicas), and user {user!r} has a quota of "
            f"{describe(name, limit)} with {describe(name, held)} held by the floors of its "
            f"other deployments ({describe(name, held + claim)} in all); lower min_replicas or "
            f"soft_min_replicas of this or another deployment, or ask the operator to raise "
            f"the quota (orchard serve {OPTIONS[name]}, or the quotas file)"
        )
    return ""


# -- settings --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Quotas:
    """The quotas of every user: ``users`` (already resolved over the default), the default,
    and the operator, who has no limits unless ``users`` names it."""

    default: Quota = NO_LIMITS
    users: Mapping[str, Quota] = field(default_factory=dict)
    operator: str = ""

    def for_user(self, user_id: str) -> Quota:
        if user_id in self.users:
            return self.users[user_id]
        return NO_LIMITS if user_id == self.operator else self.default

    def with_operator(self, user_id: str) -> Quotas:
        return replace(self, operator=user_id)


class QuotaSpec(Spec):
    """A quota as written: quantities as strings or numbers; a field left out is not set."""

    replicas: int | None = Field(default=None, ge=0)
    cpus: float | None = Field(default=None, ge=0)
    memory: int | None = Field(default=None, ge=0)
    gpus: int | None = Field(default=None, ge=0)

    @field_validator("cpus", mode="before")
    @classmethod
    def _cpus(cls, value: Any) -> Any:
        return cpu_count(value) if isinstance(value, str) else value

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, value: Any) -> Any:
        return byte_count(value) if isinstance(value, str) else value

    def written(self) -> dict[str, Any]:
        """The fields it sets (a ``null`` counts: it lifts the limit)."""
        return {name: getattr(self, name) for name in self.model_fields_set}


class QuotasSpec(Spec):
    """The quotas file."""

    default: QuotaSpec = QuotaSpec()
    users: dict[str, QuotaSpec] = {}

    @field_validator("users")
    @classmethod
    def _user_ids(cls, value: dict[str, QuotaSpec]) -> dict[str, QuotaSpec]:
        for user_id in value:
            check_id(user_id, "user id")
        return value


def quotas_from(data: Any, options: Mapping[str, Any]) -> Quotas:
    """The quotas of a quotas file's contents (None: no file) with the ``options``
    (``--quota-*`` values by resource name; None: not given) over its default. Raises
    :class:`~orchard.errors.UserError` listing each problem by its field path."""
    spec = validate(QuotasSpec, {} if data is None else data, where="", error=errors.UserError)
    given = {name: value for name, value in options.items() if value is not None}
    flags = validate(QuotaSpec, given, where="options", error=errors.UserError)
    default = spec.default.written() | flags.written()
    users = {name: Quota(**(default | entry.written())) for name, entry in spec.users.items()}
    return Quotas(Quota(**default), users)
