"""Replica choice (pure)."""

from __future__ import annotations

from orchard.dispatch.choose import ReplicaLoad, choose_replica


def view(
    key: str,
    in_flight: int = 0,
    capacity: int = 4,
    priority: int = 0,
    last_used: float = 0.0,
    draining: bool = False,
) -> ReplicaLoad:
    return ReplicaLoad(key, priority, in_flight, capacity, last_used, draining)


def test_least_loaded_wins():
    assert choose_replica([view("a", 3), view("b", 1), view("c", 2)]) == "b"


def test_load_is_relative_to_capacity():
    assert choose_replica([view("a", 2, capacity=8), view("b", 1, capacity=2)]) == "a"


def test_ties_take_turns_by_last_use():
    assert choose_replica([view("a", last_used=5.0), view("b", last_used=1.0)]) == "b"


def test_full_and_draining_replicas_take_nothing():
    assert choose_replica([view("a", 4), view("b", draining=True)]) is None
    assert choose_replica([]) is None


def test_higher_priority_nodepool_first_then_spill_over():
    replicas = [view("low", 0, priority=1), view("high", 3, priority=9)]
    assert choose_replica(replicas) == "high"
    replicas = [view("low", 0, priority=1), view("high", 4, priority=9)]
    assert choose_replica(replicas) == "low"
