"""Prometheus metrics on a registry owned by one app (never the global one: tests build many).

Names are part of the deployment contract (dashboards and alert rules use them): change none.
Buckets are chosen here, in one place: latency from 100 µs to 10 s, batch sizes in powers of two.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

PREFIX = "raman_"
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_BUCKETS = tuple(float(2**i) for i in range(13))  # 1 .. 4096
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """Every metric the service exports, on its own `CollectorRegistry`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._build_http()
        self._build_model()
        self._build_finetune()

    def _build_http(self) -> None:
        r = self.registry
        self.http_duration = Histogram(
            PREFIX + "http_request_duration_seconds",
            "HTTP request latency by route template",
            ("route", "method", "status"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.http_requests = Counter(
            PREFIX + "http_requests",
            "HTTP requests by route template",
            ("route", "method", "status"),
            registry=r,
        )

    def _build_model(self) -> None:
        r = self.registry
        self.queue_depth = Gauge(
            PREFIX + "queue_depth", "Spectra waiting to be batched", ("model",), registry=r
        )
        self.queue_rejected = Counter(
            PREFIX + "queue_rejected",
            "Requests refused because the queue was full",
            ("model",),
            registry=r,
        )
        self.batch_size = Histogram(
            PREFIX + "batch_size",
            "Spectra per inference batch",
            ("model",),
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.inference_duration = Histogram(
            PREFIX + "inference_duration_seconds",
            "Run time per batch: the session and the library search that ranks with it",
            ("model",),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.identifications = Counter(
            PREFIX + "identifications",
            "Identified spectra by outcome (match|no_match)",
            ("model", "outcome"),
            registry=r,
        )
        self.model_info = Gauge(
            PREFIX + "model_info",
            "1 for the active version of each model",
            ("name", "version", "provider"),
            registry=r,
        )

    def _build_finetune(self) -> None:
        # `raman_finetune_jobs_total` (counter) and `raman_finetune_jobs` (gauge) share a family
        # stem, which prometheus-client's own classes refuse in one registry; a small collector
        # exports both. The fine-tune subsystem drives it through `finetune_job_changed`.
        self.finetune = FinetuneCollector()
        self.registry.register(self.finetune)

    def observe_batch(self, model: str, size: int, seconds: float) -> None:
        """Record one inference batch."""
        self.batch_size.labels(model).observe(size)
        self.inference_duration.labels(model).observe(seconds)

    def track_queue(self, model: str, depth: Callable[[], float]) -> None:
        """Read the queue depth of `model` from `depth` at scrape time."""
        self.queue_depth.labels(model).set_function(depth)

    def set_active(self, name: str, version: str, provider: str) -> None:
        """Mark `version` as the active one of `name` (and no other)."""
        for labels in _label_sets(self.model_info):
            if labels["name"] == name:
                self.model_info.remove(labels["name"], labels["version"], labels["provider"])
        self.model_info.labels(name, version, provider).set(1)

    def finetune_job_changed(self, old: str | None, new: str | None) -> None:
        """Hook for the fine-tune subsystem: a job moved from state `old` to `new`.

        `old=None` is a new job; `new=None` is a job forgotten (e.g. purged from the store).
        """
        self.finetune.change(old, new)

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)


class FinetuneCollector(Collector):
    """Jobs that entered each state (counter) and jobs now in each state (gauge)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entered: dict[str, int] = {}
        self._current: dict[str, int] = {}

    def change(self, old: str | None, new: str | None) -> None:
        """Count a state transition (thread-safe: workers may report from their threads)."""
        with self._lock:
            if old is not None:
                self._current[old] = max(0, self._current.get(old, 0) - 1)
            if new is not None:
                self._current[new] = self._current.get(new, 0) + 1
                self._entered[new] = self._entered.get(new, 0) + 1

    def describe(self) -> list[Metric]:
        return []  # no fixed names to register: see `Metrics._build_finetune`

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            entered, current = dict(self._entered), dict(self._current)
        total = CounterMetricFamily(
            PREFIX + "finetune_jobs", "Fine-tune jobs that entered each state", labels=("state",)
        )
        gauge = GaugeMetricFamily(
            PREFIX + "finetune_jobs", "Fine-tune jobs currently in each state", labels=("state",)
        )
        for state, count in sorted(entered.items()):
            total.add_metric((state,), count)
        for state, count in sorted(current.items()):
            gauge.add_metric((state,), count)
        return [total, gauge]


def _label_sets(metric: Gauge) -> list[dict[str, str]]:
    return [sample.labels for family in metric.collect() for sample in family.samples]
