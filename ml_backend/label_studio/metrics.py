"""Prometheus metrics of the backend (its own registry, served at /metrics)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 100)


class _ModelCollector(Collector):
    """Reads cache counters and the model version at scrape time."""

    def __init__(self, status: Callable[[], dict[str, Any]], cache_stats: Callable[[], Any]):
        self._status = status
        self._cache_stats = cache_stats

    def collect(self) -> Iterable[Any]:
        status = self._status()
        info = InfoMetricFamily("unsamv2_model", "The serving model")
        info.add_metric(
            [],
            {
                "version": str(status.get("model_version") or "unavailable"),
                "state": str(status.get("state")),
                "granularity_mode": str(status.get("granularity_mode") or ""),
            },
        )
        yield info
        stats = self._cache_stats()
        if stats is None:
            return
        hits = CounterMetricFamily("unsamv2_embedding_cache_hits", "Embedding cache hits")
        hits.add_metric([], stats.hits + stats.coalesced)
        misses = CounterMetricFamily("unsamv2_embedding_cache_misses", "Embedding cache misses")
        misses.add_metric([], stats.misses)
        size = GaugeMetricFamily("unsamv2_embedding_cache_bytes", "Bytes held by the cache")
        size.add_metric([], stats.bytes)
        entries = GaugeMetricFamily("unsamv2_embedding_cache_entries", "Images in the cache")
        entries.add_metric([], stats.entries)
        yield from (hits, misses, size, entries)


class Metrics:
    """Request counts and latencies, plus model and cache state read at scrape time."""

    def __init__(self, status: Callable[[], dict[str, Any]], cache_stats: Callable[[], Any]):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "unsamv2_http_requests",
            "HTTP requests",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "unsamv2_http_request_seconds",
            "HTTP request latency",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.predictions = Counter(
            "unsamv2_predictions", "Predictions by kind", ["kind"], registry=self.registry
        )
        self.registry.register(_ModelCollector(status, cache_stats))

    def observe(self, route: str, method: str, status: int, started: float) -> None:
        """Record one finished request."""
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(time.perf_counter() - started)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
