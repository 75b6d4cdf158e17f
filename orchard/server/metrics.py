"""Prometheus metrics, served at ``/metrics`` of the HTTP listener: prediction calls and their
latency by target and call shape, and per deployment its replicas (desired, live), items in
flight and calls waiting, with the instances of each nodepool.

Counters and histograms are updated on the request path; the gauges are read at scrape time
from the orchestrator's last published view (an immutable snapshot), so a scrape never reads
state the orchestrator is changing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """One server's metrics (its own registry, so several servers can share a process)."""

    def __init__(self, live: Callable[[], Any]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "orchard_requests",
            "Prediction calls, by target, call shape and final status code.",
            ["target", "method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "orchard_request_seconds",
            "Prediction call duration (to the last response), by target and call shape.",
            ["target", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_LiveCollector(live))

    def observe(self, target: str, method: str, code: str, seconds: float) -> None:
        self.requests.labels(target, method, code).inc()
        self.latency.labels(target, method).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _LiveCollector(Collector):
    def __init__(self, live: Callable[[], Any]) -> None:
        self.live = live

    def collect(self) -> Iterator[Metric]:
        view = self.live()
        replicas = GaugeMetricFamily(
            "orchard_deployment_replicas",
            "Replicas of a deployment: desired by the autoscaler, live (connected and ready).",
            labels=["deployment", "state"],
        )
        in_flight = GaugeMetricFamily(
            "orchard_deployment_in_flight",
            "Items running on a deployment's replicas.",
            labels=["deployment"],
        )
        queued = GaugeMetricFamily(
            "orchard_deployment_queue_depth",
            "Calls waiting for a replica of a deployment.",
            labels=["deployment"],
        )
        instances = GaugeMetricFamily(
            "orchard_nodepool_instances", "Instances a nodepool runs.", labels=["nodepool"]
        )
        if view is not None:
            for (user_id, dep_id), dep in view.deployments.items():
                name = f"{user_id}/{dep_id}"
                replicas.add_metric([name, "desired"], dep.desired)
                replicas.add_metric([name, "live"], dep.live)
                in_flight.add_metric([name], dep.in_flight)
                queued.add_metric([name], dep.queued)
            for pool, count in view.nodepools.items():
                label = f"{pool.user_id}/{pool.compute_cluster_id}/{pool.nodepool_id}"
                instances.add_metric([label], count)
        yield from (replicas, in_flight, queued, instances)
