"""The autoscaler (pure): a table of configs and loads, and simulations driven by a fake clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from orchard.configs import AutoscaleSpec
from orchard.orchestration.autoscale import (
    AutoscalePolicy,
    LoadSample,
    ScaleState,
    decide_replicas,
)

NOW = 10_000.0
# Short delays that keep the table readable: history 60s, up 60s, down 120s, zero 600s.
QUICK = AutoscalePolicy(
    traffic_history_seconds=60,
    scale_up_delay_seconds=60,
    scale_down_delay_seconds=120,
    scale_to_zero_delay_seconds=600,
)


def quick(**changes: int) -> AutoscalePolicy:
    fields = {
        "traffic_history_seconds": 60,
        "scale_up_delay_seconds": 60,
        "scale_down_delay_seconds": 120,
        "scale_to_zero_delay_seconds": 600,
        **changes,
    }
    return AutoscalePolicy(**fields)


def s(at: float, in_flight: int, queued: int = 0) -> LoadSample:
    return LoadSample(at, in_flight, queued)


@dataclass(frozen=True)
class Case:
    policy: AutoscalePolicy
    state: ScaleState
    samples: tuple[LoadSample, ...]
    desired: int
    reason: str
    concurrency: int = 4
    flags: dict[str, bool] = field(default_factory=dict)


CASES: dict[str, Case] = {
    "defaults-idle-at-zero": Case(
        AutoscalePolicy(),
        ScaleState(),
        (),
        0,
        "load 0 items over 0 replicas of 4 slots needs 0: steady at 0",
    ),
    "defaults-burst-from-zero": Case(
        AutoscalePolicy(),
        ScaleState(),
        (s(NOW, 0, 9),),
        3,
        "load 9 items over 0 replicas of 4 slots needs 3: burst: 0 → 3",
    ),
    "min-equals-max-starts-at-floor": Case(
        AutoscalePolicy(min_replicas=2, max_replicas=2),
        ScaleState(),
        (),
        2,
        "load 0 items over 0 replicas of 4 slots needs 0: 0 → 2 (floor 2)",
    ),
    "min-equals-max-ignores-burst": Case(
        AutoscalePolicy(min_replicas=2, max_replicas=2),
        ScaleState(desired=2),
        (s(NOW, 8, 30),),
        2,
        "load 38 items over 2 replicas of 4 slots needs 10: steady at 2",
    ),
    "min-equals-max-idle-keeps-count": Case(
        quick(min_replicas=2, max_replicas=2),
        ScaleState(desired=2, below_since=NOW - 1000),
        (),
        2,
        "load 0 items over 2 replicas of 4 slots needs 0: steady at 2",
    ),
    "soft-min-adds-to-min": Case(
        AutoscalePolicy(min_replicas=1, soft_min_replicas=1),
        ScaleState(),
        (),
        2,
        "load 0 items over 0 replicas of 4 slots needs 0: 0 → 2 (floor 2)",
    ),
    "soft-min-capped-by-max": Case(
        AutoscalePolicy(min_replicas=2, soft_min_replicas=3, max_replicas=3),
        ScaleState(),
        (),
        3,
        "load 0 items over 0 replicas of 4 slots needs 0: 0 → 3 (floor 3)",
    ),
    "floor-raised-inside-up-delay": Case(
        quick(min_replicas=2),
        ScaleState(desired=1, last_scale_up=NOW - 10),
        (),
        2,
        "load 0 items over 1 replicas of 4 slots needs 0: "
        "1 → 2 (floor 2; scale_up_delay: 50s left)",
    ),
    "burst-inside-up-delay": Case(
        QUICK,
        ScaleState(desired=2, last_scale_up=NOW - 10),
        (s(NOW - 30, 8), s(NOW, 8, 4)),
        3,
        "load 12 items over 2 replicas of 4 slots needs 3: burst: 2 → 3",
    ),
    "no-burst-inside-up-delay": Case(
        QUICK,
        ScaleState(desired=2, last_scale_up=NOW - 10),
        (s(NOW - 30, 8, 8), s(NOW, 8)),
        2,
        "load 12 items over 2 replicas of 4 slots needs 3: stay at 2 (scale_up_delay: 50s left)",
    ),
    "no-burst-after-up-delay": Case(
        QUICK,
        ScaleState(desired=2, last_scale_up=NOW - 60),
        (s(NOW - 30, 8, 8), s(NOW, 8)),
        3,
        "load 12 items over 2 replicas of 4 slots needs 3: 2 → 3",
    ),
    "no-burst-never-scaled-up": Case(
        QUICK,
        ScaleState(desired=1),
        (s(NOW - 30, 4, 4), s(NOW, 4)),
        2,
        "load 6 items over 1 replicas of 4 slots needs 2: 1 → 2",
    ),
    "burst-capped-by-max": Case(
        quick(max_replicas=3),
        ScaleState(desired=1, last_scale_up=NOW - 1),
        (s(NOW, 4, 40),),
        3,
        "load 44 items over 1 replicas of 4 slots needs 11: burst: 1 → 3 (max_replicas 3)",
    ),
    "above-max-after-config-change": Case(
        quick(max_replicas=2),
        ScaleState(desired=4),
        (),
        2,
        "load 0 items over 4 replicas of 4 slots needs 0: above max_replicas: 4 → 2",
    ),
    "down-period-starts": Case(
        QUICK,
        ScaleState(desired=3),
        (s(NOW, 4),),
        3,
        "load 4 items over 3 replicas of 4 slots needs 1: "
        "stay at 3 (below for 0s of scale_down_delay 120s)",
    ),
    "down-not-before-delay": Case(
        QUICK,
        ScaleState(desired=3, below_since=NOW - 119, below_peak=1),
        (s(NOW, 4),),
        3,
        "load 4 items over 3 replicas of 4 slots needs 1: "
        "stay at 3 (below for 119s of scale_down_delay 120s)",
    ),
    "down-after-delay-straight-to-need": Case(
        QUICK,
        ScaleState(desired=3, below_since=NOW - 120, below_peak=1),
        (s(NOW, 4),),
        1,
        "load 4 items over 3 replicas of 4 slots needs 1: below for 120s: 3 → 1",
    ),
    "down-keeps-the-period-peak": Case(
        QUICK,
        ScaleState(desired=4, below_since=NOW - 120, below_peak=2),
        (s(NOW, 4),),
        2,
        "load 4 items over 4 replicas of 4 slots needs 1: below for 120s: 4 → 2",
    ),
    "sample-between-ticks-restarts-period": Case(
        QUICK,
        ScaleState(desired=3, below_since=NOW - 200, below_peak=1),
        (s(NOW - 50, 12), s(NOW, 4)),
        3,
        "load 8 items over 3 replicas of 4 slots needs 2: "
        "stay at 3 (below for 50s of scale_down_delay 120s)",
    ),
    "zero-not-before-zero-delay": Case(
        QUICK,
        ScaleState(desired=1, below_since=NOW - 500, last_request=NOW - 599),
        (),
        1,
        "load 0 items over 1 replicas of 4 slots needs 0: "
        "stay at 1 (last request 599s ago, scale_to_zero_delay 600s)",
    ),
    "zero-after-zero-delay": Case(
        QUICK,
        ScaleState(desired=1, below_since=NOW - 500, last_request=NOW - 600),
        (),
        0,
        "load 0 items over 1 replicas of 4 slots needs 0: below for 500s: 1 → 0",
    ),
    "zero-needs-the-down-delay-too": Case(
        QUICK,
        ScaleState(desired=1, below_since=NOW - 100, last_request=NOW - 5000),
        (),
        1,
        "load 0 items over 1 replicas of 4 slots needs 0: "
        "stay at 1 (below for 100s of scale_down_delay 120s)",
    ),
    "zero-never-requested": Case(
        QUICK,
        ScaleState(desired=1, below_since=NOW - 120),
        (),
        0,
        "load 0 items over 1 replicas of 4 slots needs 0: below for 120s: 1 → 0",
    ),
    "down-to-one-held-for-zero": Case(
        QUICK,
        ScaleState(desired=3, below_since=NOW - 120, last_request=NOW - 130),
        (),
        1,
        "load 0 items over 3 replicas of 4 slots needs 0: below for 120s: 3 → 1 "
        "(last request 130s ago, scale_to_zero_delay 600s)",
    ),
    "floor-above-zero-never-zero": Case(
        quick(min_replicas=1),
        ScaleState(desired=1, last_request=NOW - 100_000),
        (),
        1,
        "load 0 items over 1 replicas of 4 slots needs 0: steady at 1",
    ),
    "floor-stops-scale-down": Case(
        quick(min_replicas=1),
        ScaleState(desired=3, below_since=NOW - 120, below_peak=1),
        (),
        1,
        "load 0 items over 3 replicas of 4 slots needs 0: below for 120s: 3 → 1",
    ),
    "waiting-at-zero-ignores-up-delay": Case(
        QUICK,
        ScaleState(desired=0, last_scale_up=NOW - 1),
        (),
        1,
        "load 0 items over 0 replicas of 4 slots needs 1: waiting request: 0 → 1",
        flags={"waiting": True},
    ),
    "waiting-with-queue-scales-to-need": Case(
        QUICK,
        ScaleState(desired=0, last_scale_up=NOW - 1),
        (s(NOW, 0, 9),),
        3,
        "load 9 items over 0 replicas of 4 slots needs 3: waiting request: 0 → 3",
        flags={"waiting": True},
    ),
    "waiting-while-disabled": Case(
        QUICK,
        ScaleState(desired=0),
        (s(NOW, 0, 2),),
        0,
        "deployment is disabled: stay at 0",
        flags={"waiting": True, "disabled": True},
    ),
    "disabled-drops-every-replica": Case(
        quick(min_replicas=2),
        ScaleState(desired=3),
        (s(NOW, 8, 8),),
        0,
        "deployment is disabled: 3 → 0",
        flags={"disabled": True},
    ),
    "max-replicas-zero-even-when-waiting": Case(
        AutoscalePolicy(max_replicas=0),
        ScaleState(desired=0),
        (s(NOW, 0, 2),),
        0,
        "max_replicas is 0: stay at 0",
        flags={"waiting": True},
    ),
    "window-excludes-old-and-future-samples": Case(
        QUICK,
        ScaleState(desired=1),
        (s(NOW - 61, 100), s(NOW - 30, 4), s(NOW, 4), s(NOW + 5, 100)),
        1,
        "load 4 items over 1 replicas of 4 slots needs 1: steady at 1",
    ),
    "window-edge-sample-counts": Case(
        QUICK,
        ScaleState(desired=1),
        (s(NOW - 60, 12), s(NOW, 4)),
        2,
        "load 8 items over 1 replicas of 4 slots needs 2: 1 → 2",
    ),
    "concurrency-3-rounds-up": Case(
        QUICK,
        ScaleState(desired=1),
        (s(NOW, 7),),
        3,
        "load 7 items over 1 replicas of 3 slots needs 3: 1 → 3",
        concurrency=3,
    ),
    "concurrency-exact-multiple": Case(
        QUICK,
        ScaleState(desired=2),
        (s(NOW, 8),),
        2,
        "load 8 items over 2 replicas of 4 slots needs 2: steady at 2",
    ),
    "mean-above-latest-sample": Case(
        QUICK,
        ScaleState(desired=2),
        (s(NOW - 10, 9), s(NOW, 6)),
        2,
        "load 7.5 items over 2 replicas of 4 slots needs 2: steady at 2",
    ),
    "mean-of-three-rounds-up": Case(
        QUICK,
        ScaleState(desired=2),
        (s(NOW - 20, 9), s(NOW - 10, 9), s(NOW, 4)),
        2,
        "load 7.33 items over 2 replicas of 4 slots needs 2: steady at 2",
    ),
    "concurrency-1": Case(
        QUICK,
        ScaleState(desired=2),
        (s(NOW, 3),),
        3,
        "load 3 items over 2 replicas of 1 slots needs 3: 2 → 3",
        concurrency=1,
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_decision_table(case: Case) -> None:
    decision = decide_replicas(
        case.policy, case.concurrency, case.samples, case.state, NOW, **case.flags
    )
    assert (decision.desired, decision.reason) == (case.desired, case.reason)
    assert decision.state.desired == decision.desired
    assert decision.previous == case.state.desired
    assert decision.changed == (case.desired != case.state.desired)


# -- the policy from a config --------------------------------------------------------------


def test_policy_defaults_are_the_published_ones() -> None:
    assert AutoscalePolicy.from_spec(AutoscaleSpec()) == AutoscalePolicy(
        min_replicas=0,
        soft_min_replicas=0,
        max_replicas=5,
        traffic_history_seconds=300,
        scale_up_delay_seconds=300,
        scale_down_delay_seconds=300,
        scale_to_zero_delay_seconds=1800,
    )
    assert AutoscalePolicy() == AutoscalePolicy.from_spec(AutoscaleSpec())


def test_policy_zeros_mean_defaults_even_in_an_unvalidated_spec() -> None:
    spec = AutoscaleSpec.model_construct(
        min_replicas=0,
        max_replicas=0,
        traffic_history_seconds=0,
        scale_down_delay_seconds=0,
        scale_up_delay_seconds=0,
        disable_packing=False,
        scale_to_zero_delay_seconds=0,
        soft_min_replicas=0,
    )
    assert AutoscalePolicy.from_spec(spec) == AutoscalePolicy()


def test_policy_keeps_given_values() -> None:
    spec = AutoscaleSpec(
        min_replicas=1,
        soft_min_replicas=2,
        max_replicas=4,
        traffic_history_seconds=30,
        scale_up_delay_seconds=10,
        scale_down_delay_seconds=20,
        scale_to_zero_delay_seconds=40,
    )
    policy = AutoscalePolicy.from_spec(spec)
    assert policy == AutoscalePolicy(1, 2, 4, 30, 10, 20, 40)
    assert policy.floor == 3


@pytest.mark.parametrize(
    ("min_replicas", "soft_min", "max_replicas", "floor"),
    [(0, 0, 5, 0), (1, 0, 5, 1), (1, 2, 5, 3), (2, 3, 4, 4), (3, 0, 3, 3), (0, 0, 0, 0)],
)
def test_floor(min_replicas: int, soft_min: int, max_replicas: int, floor: int) -> None:
    policy = AutoscalePolicy(min_replicas, soft_min, max_replicas)
    assert policy.floor == floor


def test_capacity_must_be_at_least_one() -> None:
    with pytest.raises(ValueError, match="concurrency must be at least 1 item, got 0"):
        decide_replicas(QUICK, 0, (), ScaleState(), NOW)


# -- the state it returns ------------------------------------------------------------------


def test_scale_up_records_its_time_and_clears_the_down_period() -> None:
    state = ScaleState(desired=1, below_since=NOW - 50, below_peak=0, last_scale_down=5.0)
    decision = decide_replicas(QUICK, 4, (s(NOW, 4, 4),), state, NOW)
    assert decision.state == ScaleState(
        desired=2,
        last_scale_up=NOW,
        last_scale_down=5.0,
        last_request=NOW,
        below_since=None,
        below_peak=0,
    )
    assert (decision.load, decision.needed) == (8.0, 2)


def test_scale_down_records_its_time_and_starts_a_new_period_when_still_below() -> None:
    state = ScaleState(desired=4, last_scale_up=1.0, below_since=NOW - 120, below_peak=2)
    decision = decide_replicas(QUICK, 4, (s(NOW, 4),), state, NOW)
    assert decision.desired == 2
    assert decision.state == ScaleState(
        desired=2,
        last_scale_up=1.0,
        last_scale_down=NOW,
        last_request=NOW,
        below_since=NOW,
        below_peak=1,
    )


def test_scale_down_to_the_need_ends_the_period() -> None:
    state = ScaleState(desired=3, below_since=NOW - 120, below_peak=1)
    decision = decide_replicas(QUICK, 4, (s(NOW, 4),), state, NOW)
    assert decision.desired == 1
    assert (decision.state.below_since, decision.state.below_peak) == (None, 0)


def test_held_at_one_keeps_the_period_so_zero_follows_the_zero_delay() -> None:
    state = ScaleState(desired=3, below_since=NOW - 120, last_request=NOW - 130)
    first = decide_replicas(QUICK, 4, (), state, NOW)
    assert first.desired == 1
    assert (first.state.below_since, first.state.below_peak) == (NOW - 120, 0)
    at_zero_delay = decide_replicas(QUICK, 4, (), first.state, NOW - 130 + 600)
    assert at_zero_delay.desired == 0
    assert at_zero_delay.reason == (
        "load 0 items over 1 replicas of 4 slots needs 0: below for 590s: 1 → 0"
    )


def test_last_request_comes_from_samples_waiting_and_the_caller() -> None:
    samples = (s(NOW - 40, 1), s(NOW - 20, 0), s(NOW + 5, 3))
    assert decide_replicas(QUICK, 4, samples, ScaleState(), NOW).state.last_request == NOW - 40
    caller = ScaleState(last_request=NOW - 10)
    assert decide_replicas(QUICK, 4, samples, caller, NOW).state.last_request == NOW - 10
    waiting = decide_replicas(QUICK, 4, (), ScaleState(), NOW, waiting=True)
    assert waiting.state.last_request == NOW
    assert decide_replicas(QUICK, 4, (), ScaleState(), NOW).state.last_request is None


def test_steady_state_is_returned_unchanged() -> None:
    state = ScaleState(desired=2, last_scale_up=1.0, last_scale_down=2.0, last_request=NOW - 1)
    decision = decide_replicas(QUICK, 4, (s(NOW, 8),), state, NOW)
    assert decision.state == ScaleState(2, 1.0, 2.0, NOW, None, 0)
    assert not decision.changed


# -- simulations: the function driven over time --------------------------------------------


def simulate(
    policy: AutoscalePolicy,
    demand: Callable[[float], int],
    until: int,
    *,
    tick: int = 10,
    sample_every: int | None = None,
    concurrency: int = 4,
    state: ScaleState | None = None,
) -> list[tuple[int, int]]:
    """Drive the autoscaler like the reconciler would, with replicas that start at once:
    each sample splits ``demand(t)`` into what the current replicas run and what queues.
    Returns the (time, count) pairs at which the count changed."""
    state = state or ScaleState()
    samples: list[LoadSample] = []
    changes: list[tuple[int, int]] = []
    step = sample_every or tick
    for t in range(0, until + 1, step):
        items, slots = demand(t), state.desired * concurrency
        samples.append(LoadSample(t, min(items, slots), max(0, items - slots)))
        if t % tick:
            continue
        waiting = items > 0 and state.desired == 0
        decision = decide_replicas(policy, concurrency, samples, state, t, waiting=waiting)
        if decision.changed:
            changes.append((t, decision.desired))
        state = decision.state
    return changes


def test_ramp_up_then_idle() -> None:
    def demand(t: float) -> int:
        if 100 <= t < 200:
            return 2
        if 200 <= t < 300:
            return 10
        if 300 <= t < 400:
            return 20
        if 1100 <= t < 1150:
            return 1
        return 0

    # 100: a held request scales from zero; 200 and 300: bursts scale at once to the need
    # (capped at the default max of 5); 410: the mean falls below 5, and 120s later every
    # sample since then needed none, so 5 → 1 (the last request was at 390, not 600s ago);
    # 990: 600s after the last request, to zero; 1100: from zero again.
    assert simulate(QUICK, demand, until=1200) == [
        (100, 1),
        (200, 3),
        (300, 5),
        (530, 1),
        (990, 0),
        (1100, 1),
    ]


def test_floor_keeps_replicas_through_idle() -> None:
    def demand(t: float) -> int:
        return 30 if 100 <= t < 150 else 0

    # 0: the floor at once; 100: a burst to max_replicas; 180: the mean over the 60s window
    # falls below 5 replicas, and 120s later the count drops to the floor, never below it.
    assert simulate(quick(min_replicas=1, soft_min_replicas=1), demand, until=3000) == [
        (0, 2),
        (100, 5),
        (300, 2),
    ]


def test_one_request_at_defaults_keeps_a_replica_for_the_zero_delay() -> None:
    def demand(t: float) -> int:
        return 1 if t == 0 else 0

    assert simulate(AutoscalePolicy(), demand, until=4000, tick=60) == [(0, 1), (1800, 0)]


def test_slow_rise_without_queue_follows_the_up_delay() -> None:
    # The mean over the window carries the queue of earlier samples, so the target rises
    # while the latest sample shows no queue: the step waits for the up delay.
    policy = quick(traffic_history_seconds=300)
    state = ScaleState(desired=1, last_scale_up=60.0)
    samples = [s(t, 4, 12) for t in range(0, 100, 10)] + [s(100, 4)]
    decisions = []
    for now in (100, 110, 120):
        window = [*samples, *(s(t, 4) for t in range(110, now + 1, 10))]
        decisions.append(decide_replicas(policy, 4, window, state, now))
        state = decisions[-1].state
    # Means: (10 * 16 + 4) / 11 = 14.9, then 14, then 13.2 items: 4 replicas each time.
    assert [(d.desired, d.reason) for d in decisions] == [
        (
            1,
            "load 14.91 items over 1 replicas of 4 slots needs 4: "
            "stay at 1 (scale_up_delay: 20s left)",
        ),
        (
            1,
            "load 14 items over 1 replicas of 4 slots needs 4: "
            "stay at 1 (scale_up_delay: 10s left)",
        ),
        (4, "load 13.23 items over 1 replicas of 4 slots needs 4: 1 → 4"),
    ]


def test_spikes_between_ticks_keep_their_replicas() -> None:
    # Samples every 5s, decisions every 20s; a spike of 12 items (3 replicas) comes between
    # two decisions, so the latest sample at each decision shows 2 items and the mean needs
    # 2 replicas. The spike restarts the scale-down period, so 3 replicas stay.
    def demand(t: float) -> int:
        return 12 if t % 20 == 10 else 2

    start = ScaleState(desired=3, last_scale_up=-1000.0)
    assert simulate(QUICK, demand, until=1200, tick=20, sample_every=5, state=start) == []


def test_spikes_that_stop_release_their_replicas() -> None:
    def demand(t: float) -> int:
        return 12 if t % 20 == 10 and t < 200 else 2

    start = ScaleState(desired=3, last_scale_up=-1000.0)
    # The last spike is at 190, so the scale-down period runs from there; the first tick
    # 120s later is at 320, and the count drops to what every later sample needed (2
    # items: 1 replica).
    assert simulate(QUICK, demand, until=1200, tick=20, sample_every=5, state=start) == [(320, 1)]
