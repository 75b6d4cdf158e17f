"""The last hour of each deployment, kept in memory for the dashboard's charts.

A background task samples, every few seconds, what the server already keeps: the prediction
histogram of :class:`~orchard.server.metrics.Metrics` (calls and their latency, by target) and
the orchestrator's published view (replicas, calls waiting). Nothing is done per prediction
call: a sample reads the histogram's cumulative buckets and takes the difference from the last
sample, which gives the call rate and the p50/p99 of the calls that ended in between (as
Prometheus's ``histogram_quantile`` does, by linear interpolation inside a bucket). Each
deployment keeps at most an hour of points; no Prometheus server is needed.

It also remembers since when each replica has been in its state (the view says the state, not
since when), as first seen by a sample or a read.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from orchard.orchestration.view import LiveDeployment, LiveView

SAMPLE_SECONDS = 5.0
WINDOW_SECONDS = 3600.0
TARGET_PREFIX = "deployment/"  # dispatch.targets: a deployment's queue is deployment/<user>/<id>

Key = tuple[str, str]  # (user id, deployment id)
Buckets = dict[float, float]  # upper bound: calls at or under it (cumulative)


class HistogramSource(Protocol):
    """What a sample reads: a prometheus_client histogram labelled by target (``collect``)."""

    def collect(self) -> Iterable[object]: ...


@dataclass(frozen=True)
class Point:
    at: float  # wall clock, seconds since the epoch
    rate: float  # prediction calls ended per second since the previous point
    p50: float | None  # seconds; None when no call ended in between
    p99: float | None
    queued: int
    in_flight: int
    live: int
    desired: int


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The ``q`` quantile of calls counted in cumulative ``buckets``; None when there are none.
    Within a bucket, calls are taken as spread evenly; past the last finite bound, that bound."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, count
    return lower


def read_histogram(source: HistogramSource) -> dict[Key, Buckets]:
    """Cumulative latency buckets per deployment (all call shapes together)."""
    found: dict[Key, Buckets] = {}
    for family in source.collect():
        for sample in getattr(family, "samples", ()):
            if not sample.name.endswith("_bucket"):
                continue
            target = sample.labels.get("target", "")
            if not target.startswith(TARGET_PREFIX):
                continue
            user_id, _, deployment_id = target[len(TARGET_PREFIX) :].partition("/")
            buckets = found.setdefault((user_id, deployment_id), {})
            bound = float(sample.labels["le"])
            buckets[bound] = buckets.get(bound, 0.0) + float(sample.value)
    return found


def difference(now: Buckets, before: Buckets | None) -> Buckets:
    """The calls counted in ``now`` and not in ``before`` (a reset counts from zero)."""
    if not before:
        return dict(now)
    delta = {bound: count - before.get(bound, 0.0) for bound, count in now.items()}
    return dict(now) if any(v < 0 for v in delta.values()) else delta


class TimeSeries:
    """An hour of :class:`Point` per deployment, sampled every ``every`` seconds by
    :meth:`start`'s task (or by calling :meth:`sample`, as tests do, with their clock)."""

    def __init__(
        self,
        histogram: HistogramSource,
        live: Callable[[], LiveView | None],
        *,
        every: float = SAMPLE_SECONDS,
        window: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.histogram, self.live, self.every, self.window, self.clock = (
            histogram,
            live,
            every,
            window,
            clock,
        )
        self._series: dict[Key, deque[Point]] = {}
        self._last: dict[Key, tuple[float, Buckets]] = {}
        self._since: dict[str, tuple[str, float]] = {}
        self._task: asyncio.Task[None] | None = None

    def points(self, user_id: str, deployment_id: str) -> list[Point]:
        """The deployment's points of the last hour, oldest first."""
        return list(self._series.get((user_id, deployment_id), ()))

    def since(self, replica_id: str, state: str) -> float:
        """When ``replica_id`` was first seen in ``state`` (now, if this is the first time)."""
        seen = self._since.get(replica_id)
        if seen is None or seen[0] != state:
            seen = (state, self.clock())
            self._since[replica_id] = seen
        return seen[1]

    def sample(self) -> None:
        """Take one point per deployment that has calls or is in the view."""
        now = self.clock()
        view = self.live()
        totals = read_histogram(self.histogram)
        deployments = view.deployments if view is not None else {}
        for key in set(totals) | set(deployments):
            self._add(key, now, totals.get(key, {}), deployments.get(key))
        self._forget(now, set(totals) | set(deployments))
        self._track_replicas(view)

    def _add(self, key: Key, now: float, total: Buckets, seen: LiveDeployment | None) -> None:
        last_at, last_total = self._last.get(key, (now, {}))
        calls = difference(total, last_total) if key in self._last else {}
        self._last[key] = (now, total)
        ended = max(calls.values(), default=0.0)
        elapsed = now - last_at
        series = self._series.setdefault(key, deque(maxlen=int(self.window / self.every) + 2))
        series.append(
            Point(
                at=now,
                rate=ended / elapsed if elapsed > 0 else 0.0,
                p50=quantile(0.5, calls),
                p99=quantile(0.99, calls),
                queued=seen.queued if seen else 0,
                in_flight=seen.in_flight if seen else 0,
                live=seen.live if seen else 0,
                desired=seen.desired if seen else 0,
            )
        )
        while series and series[0].at < now - self.window:
            series.popleft()

    def _forget(self, now: float, present: set[Key]) -> None:
        """Drop deployments gone from both sources whose last point is over an hour old."""
        for key in [k for k in self._series if k not in present]:
            series = self._series[key]
            if not series or series[-1].at < now - self.window:
                del self._series[key]
                self._last.pop(key, None)

    def _track_replicas(self, view: LiveView | None) -> None:
        current: set[str] = set()
        for deployment in view.deployments.values() if view is not None else ():
            for replica in deployment.replicas:
                current.add(replica.id)
                self.since(replica.id, replica.state)
        for replica_id in [r for r in self._since if r not in current]:
            del self._since[replica_id]

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.every)

    @property
    def running(self) -> bool:
        """Sampling: from :meth:`start` until :meth:`stop`."""
        return self._task is not None

    def start(self) -> None:
        """Sample every ``every`` seconds on the running loop until :meth:`stop`."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="orchard-timeseries"
            )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
