"""Scale-down (pure): which replicas go first, and which idle instances are released."""

from __future__ import annotations

import pytest

from orchard.orchestration.removal import PlacedReplica, choose_removals, spare_instances
from orchard.orchestration.resources import Resources
from tests.test_placement import GIB, LARGE, SMALL, inst, pool, res

REPLICA = Resources(2, 4 * GIB)


def test_removals_take_the_lowest_priority_nodepool_first() -> None:
    high = pool("high", priority=5, instances=(inst("h-1", SMALL, res(2, 4), 1),))
    low = pool("low", priority=1, instances=(inst("l-1", SMALL, res(4, 8), 2),))
    replicas = [
        PlacedReplica("r-high", ("cc", "high"), "h-1"),
        PlacedReplica("r-low-1", ("cc", "low"), "l-1"),
        PlacedReplica("r-low-2", ("cc", "low"), "l-1"),
    ]
    assert choose_removals(2, replicas, [high, low], REPLICA) == ("r-low-1", "r-low-2")


def test_removals_take_a_nodepool_no_longer_listed_first() -> None:
    listed = pool("a", priority=0, instances=(inst("a-1", SMALL, res(2, 4), 1),))
    replicas = [
        PlacedReplica("r-a", ("cc", "a"), "a-1"),
        PlacedReplica("r-gone", ("cc", "gone"), "g-1"),
    ]
    assert choose_removals(1, replicas, [listed], REPLICA) == ("r-gone",)


def test_removals_empty_the_least_used_instance_first() -> None:
    # x holds two replicas of this deployment (50% used), y three plus another
    # deployment's (100%). Removing three: both of x (which empties), then one of y.
    a = pool(
        "a",
        LARGE,
        instances=(inst("x", LARGE, res(4, 8), 2), inst("y", LARGE, res(8, 12), 4)),
    )
    replicas = [
        PlacedReplica("y-1", ("cc", "a"), "y"),
        PlacedReplica("x-1", ("cc", "a"), "x"),
        PlacedReplica("y-2", ("cc", "a"), "y"),
        PlacedReplica("x-2", ("cc", "a"), "x"),
        PlacedReplica("y-3", ("cc", "a"), "y"),
    ]
    assert choose_removals(3, replicas, [a], REPLICA) == ("x-1", "x-2", "y-1")


def test_removal_ties_break_by_key() -> None:
    a = pool("a", instances=(inst("i-2", SMALL, res(2, 4), 1), inst("i-1", SMALL, res(2, 4), 1)))
    b = pool("b", instances=(inst("i-0", SMALL, res(2, 4), 1),))
    replicas = [
        PlacedReplica("r-b", ("cc", "b"), "i-0"),
        PlacedReplica("r-2", ("cc", "a"), "i-2"),
        PlacedReplica("r-1", ("cc", "a"), "i-1"),
    ]
    assert choose_removals(3, replicas, [b, a], REPLICA) == ("r-1", "r-2", "r-b")


def test_removals_refuse_a_negative_count() -> None:
    with pytest.raises(ValueError, match="count must be 0 or more, got -2"):
        choose_removals(-2, [], [], REPLICA)
    assert choose_removals(0, [], [], REPLICA) == ()


@pytest.mark.parametrize(
    ("keep", "released"),
    [(0, ["i-1", "i-2"]), (1, ["i-1", "i-2"]), (2, ["i-1"]), (3, []), (4, [])],
)
def test_idle_instances_are_released_down_to_min_instances(keep: int, released: list[str]) -> None:
    instances = {"i-2": "a", "i-3": "a", "i-1": "a"}
    assert spare_instances(instances, {"i-3"}, {"a": keep}) == released


def test_instances_of_a_nodepool_no_plan_names_are_all_released_when_idle() -> None:
    instances = {"a-1": "a", "b-1": "b", "b-2": "b"}
    assert spare_instances(instances, {"b-2"}, {"a": 1}) == ["b-1"]


def test_a_used_instance_is_never_released() -> None:
    assert spare_instances({"i-1": "a"}, {"i-1"}, {}) == []
