"""The autoscaler: a deployment's desired replica count, a pure function of (load, state, now).

Inputs. An ``AutoscalePolicy`` (the deployment's ``autoscale_config`` with zeros replaced by
the published defaults), the concurrency of one replica (its ``num_threads``: items it runs
at once), load samples ``(at, in_flight, queued)`` for the whole deployment, the ``ScaleState``
the previous call returned, ``now``, and two flags: ``disabled`` (deployment status DISABLED)
and ``waiting`` (the dispatcher holds a request because no replica is ready). Nothing here
reads a clock or does I/O; the reconciler calls ``decide_replicas`` on each tick and stores
the returned state for the next one.

Policy, in the order it is applied:

1. Disabled: 0 replicas, at once. ``max_replicas`` 0 (only possible for a policy built by hand;
   the config replaces 0 by the default 5): 0 replicas, even for a waiting request.
2. Floor and ceiling: ``floor = min(min_replicas + soft_min_replicas, max_replicas)``. The count
   never goes below the floor nor above ``max_replicas``; a count outside them (the config just
   changed) is brought inside at once, without waiting for any delay.
3. Load: ``in_flight + queued`` per sample, over the samples taken within
   ``traffic_history_seconds`` of ``now`` (older and future samples are ignored). The load is
   the larger of the window's mean and the latest sample. The mean smooths a momentary dip so
   it does not count as "load went down"; the latest sample makes a rise count now rather than
   after half a window (the mean of a step change lags). The replicas the load needs are
   ``ceil(load / concurrency)``; the target is that, clamped to [floor, max_replicas].
4. Scale up. A burst -- queued items in the latest sample, i.e. demand beyond the replicas that
   are ready, or a held ``waiting`` request -- scales up to the target at once. Without a
   burst the count goes up only once ``scale_up_delay_seconds`` have passed since the last
   scale-up (api-notes 2.3: "time to wait between scaling up replicas without burst
   traffic"). Either way the new count is the target, not one more: the target comes from
   the load, so replicas that are still starting are not counted twice.
5. Scale from zero: ``waiting`` at 0 replicas is a burst that needs at least one replica, so
   the count becomes at least 1 at once, whatever the delays.
6. Scale down. The state remembers since when the target has stayed below the current count
   (``below_since``) and the most replicas any single sample taken since then needed
   (``below_peak``). Once that has lasted ``scale_down_delay_seconds`` the count drops
   straight to the larger of the target and that peak, not one step at a time: the delay has
   shown that the replicas above both were not needed, and stepping down by one would keep
   idle replicas for one more delay per step (20 minutes to go from 5 to 1 at the defaults)
   for no gain in latency. The peak keeps a load that comes in short spikes, whose mean
   needs fewer replicas than each spike, from flapping (down after each delay, up again on
   the next spike). A sample that needed the current count restarts the period.
7. Scale to zero: the last replica goes (only when the floor is 0) once the scale-down
   delay has passed *and* no request has been seen for ``scale_to_zero_delay_seconds``; until
   then one replica is kept. A request is seen when a sample has load, when ``waiting`` is
   set, or when the caller records one in ``ScaleState.last_request``; a deployment that has
   never seen one waits only for the scale-down delay.

Trade-off. Long delays and a long history window favour latency: replicas stay up through
lulls and a returning load finds them warm, at the cost of paying for idle replicas. Short
ones favour cost: replicas go soon after the load does, and the next request after a scale
to zero waits for a cold start. Bursts always scale up at once, so the delays only decide
how fast idle replicas go and how fast a slow, queue-free rise is followed.

Caveats. Samples are averaged as points, not weighted by the time between them; the caller
should take them at a steady interval. Load counts items, not their cost: a slow item and a
fast one weigh the same. A single sample with a spike raises the target, but without queued
items it still waits for the scale-up delay.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from orchard.configs import AUTOSCALE_DEFAULTS, AutoscaleSpec


@dataclass(frozen=True)
class AutoscalePolicy:
    """A deployment's autoscale config with every default applied (times in seconds)."""

    min_replicas: int = 0
    soft_min_replicas: int = 0
    max_replicas: int = AUTOSCALE_DEFAULTS["max_replicas"]
    traffic_history_seconds: float = AUTOSCALE_DEFAULTS["traffic_history_seconds"]
    scale_up_delay_seconds: float = AUTOSCALE_DEFAULTS["scale_up_delay_seconds"]
    scale_down_delay_seconds: float = AUTOSCALE_DEFAULTS["scale_down_delay_seconds"]
    scale_to_zero_delay_seconds: float = AUTOSCALE_DEFAULTS["scale_to_zero_delay_seconds"]

    @classmethod
    def from_spec(cls, spec: AutoscaleSpec) -> AutoscalePolicy:
        """The policy of a config; a zero in a field that has a published default means unset."""

        def value(name: str) -> int:
            got: int = getattr(spec, name)
            return got or AUTOSCALE_DEFAULTS[name]

        return cls(
            min_replicas=spec.min_replicas,
            soft_min_replicas=spec.soft_min_replicas,
            max_replicas=value("max_replicas"),
            traffic_history_seconds=value("traffic_history_seconds"),
            scale_up_delay_seconds=value("scale_up_delay_seconds"),
            scale_down_delay_seconds=value("scale_down_delay_seconds"),
            scale_to_zero_delay_seconds=value("scale_to_zero_delay_seconds"),
        )

    @property
    def floor(self) -> int:
        """The fewest replicas kept while enabled: min + soft min, capped by max."""
        return min(self.min_replicas + self.soft_min_replicas, self.max_replicas)


@dataclass(frozen=True)
class LoadSample:
    """The deployment's load at one moment: items running and items waiting for a slot."""

    at: float
    in_flight: int
    queued: int = 0

    @property
    def load(self) -> int:
        return self.in_flight + self.queued


@dataclass(frozen=True)
class ScaleState:
    """What the autoscaler remembers between calls (start from ``ScaleState()``)."""

    desired: int = 0
    last_scale_up: float | None = None
    last_scale_down: float | None = None
    last_request: float | None = None
    # Since when the target has stayed below ``desired`` without a break (None while the load
    # needs the current count), and the most replicas one sample taken since then needed.
    below_since: float | None = None
    below_peak: int = 0


@dataclass(frozen=True)
class AutoscaleDecision:
    desired: int
    previous: int  # the count before this decision
    reason: str
    state: ScaleState  # pass it to the next call
    load: float  # items: the larger of the window's mean and the latest sample
    needed: int  # ceil(load / concurrency), before the floor and max_replicas

    @property
    def changed(self) -> bool:
        return self.desired != self.previous


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _last_request(
    state: ScaleState, samples: Sequence[LoadSample], now: float, waiting: bool
) -> float | None:
    seen = [s.at for s in samples if s.at <= now and s.load > 0]
    if waiting:
        seen.append(now)
    if state.last_request is not None:
        seen.append(state.last_request)
    return max(seen) if seen else None


def decide_replicas(
    policy: AutoscalePolicy,
    concurrency: int,
    samples: Sequence[LoadSample],
    state: ScaleState,
    now: float,
    *,
    disabled: bool = False,
    waiting: bool = False,
) -> AutoscaleDecision:
    """The deployment's desired replica count at ``now``; see the module docstring."""
    if concurrency < 1:
        raise ValueError(f"a replica's concurrency must be at least 1 item, got {concurrency}")
    ask = _Ask.of(policy, concurrency, samples, state, now, waiting)
    current = state.desired
    to_zero = f"{current} → 0" if current else "stay at 0"
    if disabled:
        return ask.settle(0, f"deployment is disabled: {to_zero}")
    if policy.max_replicas == 0:
        return ask.settle(0, f"max_replicas is 0: {to_zero}")
    if current > policy.max_replicas:
        new = policy.max_replicas
        return ask.settle(new, f"{ask.about}: above max_replicas: {current} → {new}")
    if ask.target > current:
        return _scale_up(ask)
    if ask.target == current:
        return ask.settle(current, f"{ask.about}: steady at {current}")
    return _scale_down(ask)


@dataclass(frozen=True)
class _Ask:
    """One call's inputs with what follows from them: the window, its load, the target."""

    policy: AutoscalePolicy
    concurrency: int
    state: ScaleState
    now: float
    waiting: bool
    window: tuple[LoadSample, ...]  # the samples within the history, oldest first
    load: float
    needed: int
    last_request: float | None

    @classmethod
    def of(
        cls,
        policy: AutoscalePolicy,
        concurrency: int,
        samples: Sequence[LoadSample],
        state: ScaleState,
        now: float,
        waiting: bool,
    ) -> _Ask:
        start = now - policy.traffic_history_seconds
        window = tuple(sorted((s for s in samples if start <= s.at <= now), key=lambda s: s.at))
        mean = sum(s.load for s in window) / len(window) if window else 0.0
        load = max(mean, float(window[-1].load) if window else 0.0)
        needed = math.ceil(load / concurrency)
        if waiting:
            needed = max(needed, 1)
        last_request = _last_request(state, samples, now, waiting)
        return cls(policy, concurrency, state, now, waiting, window, load, needed, last_request)

    @property
    def latest(self) -> LoadSample | None:
        return self.window[-1] if self.window else None

    @property
    def target(self) -> int:
        return self.bounded_count(self.needed)

    def bounded_count(self, needed: int) -> int:
        return min(max(needed, self.policy.floor), self.policy.max_replicas)

    def bounded(self, items: int) -> int:
        """The replicas ``items`` of load need, within the floor and max_replicas."""
        return self.bounded_count(math.ceil(items / self.concurrency))

    @property
    def about(self) -> str:
        shown = round(self.load, 2)
        return (
            f"load {shown:g} items over {self.state.desired} replicas of {self.concurrency} "
            f"slots needs {self.needed}"
        )

    @property
    def note(self) -> str:
        if self.needed > self.policy.max_replicas:
            return f" (max_replicas {self.policy.max_replicas})"
        if self.needed < self.policy.floor:
            return f" (floor {self.policy.floor})"
        return ""

    def settle(
        self, new: int, why: str, below_since: float | None = None, below_peak: int = 0
    ) -> AutoscaleDecision:
        state, current, now = self.state, self.state.desired, self.now
        updated = replace(
            state,
            desired=new,
            last_request=self.last_request,
            last_scale_up=now if new > current else state.last_scale_up,
            last_scale_down=now if new < current else state.last_scale_down,
            below_since=below_since,
            below_peak=below_peak if below_since is not None else 0,
        )
        return AutoscaleDecision(new, current, why, updated, self.load, self.needed)


def _scale_up(ask: _Ask) -> AutoscaleDecision:
    """The target is above the current count: at once on a burst, else after the delay."""
    policy, state, current, target = ask.policy, ask.state, ask.state.desired, ask.target
    latest, about, note = ask.latest, ask.about, ask.note
    burst = ask.waiting or (latest is not None and latest.queued > 0)
    since_up = None if state.last_scale_up is None else ask.now - state.last_scale_up
    if burst:
        cause = "waiting request" if ask.waiting and current == 0 else "burst"
        return ask.settle(target, f"{about}: {cause}: {current} → {target}{note}")
    if since_up is None or since_up >= policy.scale_up_delay_seconds:
        return ask.settle(target, f"{about}: {current} → {target}{note}")
    left = _seconds(policy.scale_up_delay_seconds - since_up)
    floor = policy.floor
    if current < floor:
        why = f"{about}: {current} → {floor} (floor {floor}; scale_up_delay: {left} left)"
        return ask.settle(floor, why)
    return ask.settle(current, f"{about}: stay at {current} (scale_up_delay: {left} left)")


def _below(ask: _Ask) -> tuple[float, int]:
    """Since when the load has needed fewer replicas than there are, and the most one sample
    since then needed. A sample taken since the period began (between two calls) that needed
    the current count restarts the period after it."""
    state, current = ask.state, ask.state.desired
    below_since = ask.now if state.below_since is None else state.below_since
    peak = 0 if state.below_since is None else state.below_peak
    for sample in ask.window:
        if sample.at < below_since:
            continue
        need = ask.bounded(sample.load)
        if need >= current:
            below_since, peak = sample.at, 0
        else:
            peak = max(peak, need)
    return below_since, peak


def _scale_down(ask: _Ask) -> AutoscaleDecision:
    """The load needs fewer replicas than there are: down to the larger of the target and the
    period's peak once it has lasted the delay; the last one only after the zero delay."""
    policy, current, now, about = ask.policy, ask.state.desired, ask.now, ask.about
    below_since, peak = _below(ask)
    below_for = now - below_since
    if below_for < policy.scale_down_delay_seconds:
        why = (
            f"{about}: stay at {current} (below for {_seconds(below_for)} of "
            f"scale_down_delay {_seconds(policy.scale_down_delay_seconds)})"
        )
        return ask.settle(current, why, below_since, peak)
    new = max(ask.target, peak)
    zero_note = ""
    if new == 0:
        idle = None if ask.last_request is None else now - ask.last_request
        if idle is not None and idle < policy.scale_to_zero_delay_seconds:
            new = 1
            zero_note = (
                f" (last request {_seconds(idle)} ago, "
                f"scale_to_zero_delay {_seconds(policy.scale_to_zero_delay_seconds)})"
            )
    if new == current:
        return ask.settle(current, f"{about}: stay at {current}{zero_note}", below_since, peak)
    why = f"{about}: below for {_seconds(below_for)}: {current} → {new}{zero_note}"
    if zero_note:
        # Held at 1 for the zero delay: the load has needed none for the whole period, which
        # goes on, so the last replica goes as soon as the zero delay allows.
        return ask.settle(new, why, below_since, peak)
    # A new period starts at once if the load is already under the new count.
    if ask.target < new:
        return ask.settle(
            new, why, now, max((ask.bounded(s.load) for s in ask.window if s.at >= now), default=0)
        )
    return ask.settle(new, why)
