"""Orchestration decisions: autoscaling and placement, pure functions of (snapshot, state, now)."""
