"""Prometheus metrics of one edge node: request counts and latency, served versions, sync freshness.

With `--workers N` the edge runs prometheus-client's multiprocess mode (`PROMETHEUS_MULTIPROC_DIR`, set by `serve`
before the workers start): every worker writes its metrics to memory-mapped files in that directory, so whichever
worker answers `/metrics` shows all workers' counters summed, and versions as the lowest (data version) or highest
(origin version, staleness) over the live workers.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from origin_sync.replica import SyncStatus

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


class SyncCollector:
    """Sync counters read from the syncer's status at scrape time (the syncer counts; metrics only report)."""

    def __init__(self) -> None:
        self.status: SyncStatus | None = None

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        sync = self.status
        if sync is None:
            return
        yield CounterMetricFamily("edgerec_sync_errors", "Failed sync attempts since start", value=sync.errors)
        rejected = CounterMetricFamily(
            "edgerec_sync_rejected",
            "Payloads refused before use, by reason (signature, chain, order, decode, truncated, blob, disk, ...)",
            labels=["reason"],
        )
        for reason, count in sorted(sync.rejected.items()):
            rejected.add_metric([reason], count)
        yield rejected
        yield CounterMetricFamily(
            "edgerec_sync_persist_failures",
            "Failed writes of the local copy (disk full, unwritable); serving goes on from memory",
            value=sync.persist_failures,
        )
        yield CounterMetricFamily(
            "edgerec_sync_applied", "Versions applied (snapshots and delta batches)", value=sync.applied
        )
        yield CounterMetricFamily("edgerec_sync_snapshots", "Snapshots taken", value=sync.snapshots)
        yield CounterMetricFamily(
            "edgerec_sync_failovers",
            "Moves to the next origin (EDGEREC_ORIGIN_URL lists "
            "several) after one failed or answered something refused",
            value=sync.failovers,
        )
        yield GaugeMetricFamily(
            "edgerec_sync_versions_behind", "Origin version minus the applied version", value=sync.versions_behind()
        )
        yield GaugeMetricFamily(
            "edgerec_sync_persisted_version",
            "Version of the copy on local disk",
            value=sync.persisted_version if sync.persisted_version is not None else float("nan"),
        )


class SpoolCollector:
    """The event spool's counters, read at scrape time."""

    def __init__(self, metrics: "EdgeMetrics") -> None:
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        spool = self.metrics.spool
        if spool is None:
            return
        dropped = CounterMetricFamily(
            "edgerec_events_dropped",
            "Events dropped, by reason (spool_full, backlog, "
            "disk_error, rejected; torn_write counts torn segment tails)",
            labels=["reason"],
        )
        for reason in ("spool_full", "backlog", "disk_error", "rejected", "torn_write"):
            dropped.add_metric([reason], spool.dropped.get(reason, 0))
        yield dropped
        yield CounterMetricFamily("edgerec_events_recorded", "Events queued for the spool", value=spool.appended)
        yield CounterMetricFamily(
            "edgerec_events_written", "Events written to the spool's segment files", value=spool.written
        )
        yield CounterMetricFamily("edgerec_events_shipped", "Events acknowledged by the origin", value=spool.shipped)
        yield CounterMetricFamily("edgerec_events_ship_failures", "Failed shipping attempts", value=spool.ship_failures)
        yield GaugeMetricFamily(
            "edgerec_events_spool_bytes", "Bytes of events on disk not yet acknowledged", value=spool.bytes_on_disk
        )


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
DROP_REASONS = ("spool_full", "backlog", "disk_error", "rejected", "torn_write")


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def forget_dead_workers(directory: str) -> None:
    """Drop the live gauges of worker processes that are gone (a worker uvicorn restarted)."""
    for name in os.listdir(directory):
        pid = name.rsplit("_", 1)[-1].removesuffix(".db")
        if name.startswith("gauge_live") and pid.isdigit():
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                multiprocess.mark_process_dead(int(pid), directory)
            except PermissionError:
                pass


class WorkerFigures:
    """In multiprocess mode, this worker's sync and spool figures as metrics in the shared files: counters advanced
    by what grew since the last publish, gauges set (the scrape combines them over the workers)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        self.counters = {
            "errors": counter("edgerec_sync_errors", "Failed sync attempts since start"),
            "rejected": counter("edgerec_sync_rejected", "Payloads refused before use, by reason", ("reason",)),
            "persist_failures": counter("edgerec_sync_persist_failures", "Failed writes of the local copy"),
            "applied": counter("edgerec_sync_applied", "Versions applied (snapshots and delta batches)"),
            "snapshots": counter("edgerec_sync_snapshots", "Snapshots taken"),
            "failovers": counter("edgerec_sync_failovers", "Moves to the next origin"),
            "dropped": counter("edgerec_events_dropped", "Events dropped, by reason", ("reason",)),
            "appended": counter("edgerec_events_recorded", "Events queued for the spool"),
            "written": counter("edgerec_events_written", "Events written to the spool's segment files"),
            "shipped": counter("edgerec_events_shipped", "Events acknowledged by the origin"),
            "ship_failures": counter("edgerec_events_ship_failures", "Failed shipping attempts"),
        }
        self.versions_behind = Gauge(
            "edgerec_sync_versions_behind",
            "Origin version minus the applied version",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.persisted_version = Gauge(
            "edgerec_sync_persisted_version",
            "Version of the copy on local disk",
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.spool_bytes = Gauge(
            "edgerec_events_spool_bytes",
            "Bytes of events on disk not yet acknowledged",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._published: dict[tuple[str, str], float] = {}

    def _advance(self, name: str, value: float, label: str = "") -> None:
        grown = value - self._published.get((name, label), 0.0)
        if grown > 0:
            counter = self.counters[name]
            (counter.labels(label) if label else counter).inc(grown)
            self._published[(name, label)] = value

    def publish(self, sync: Any, spool: Any) -> None:
        if sync is not None:
            for name in ("errors", "persist_failures", "applied", "snapshots", "failovers"):
                self._advance(name, getattr(sync, name))
            for reason, count in sync.rejected.items():
                self._advance("rejected", count, reason)
            self.versions_behind.set(sync.versions_behind())
            if sync.persisted_version is not None:
                self.persisted_version.set(sync.persisted_version)
        if spool is not None:
            for name in ("appended", "written", "shipped", "ship_failures"):
                self._advance(name, getattr(spool, name))
            for reason in DROP_REASONS:
                self._advance("dropped", spool.dropped.get(reason, 0), reason)
            self.spool_bytes.set(spool.bytes_on_disk)


class EdgeMetrics:
    def __init__(self) -> None:
        self.multiprocess_dir = multiprocess_dir()
        if self.multiprocess_dir:
            forget_dead_workers(self.multiprocess_dir)
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "edgerec_requests_total",
            "Requests answered, by route, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "edgerec_request_duration_seconds",
            "Time to answer a request, by route and method",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inference = Histogram(
            "edgerec_inference_seconds", "Time of one ONNX ranker run", buckets=LATENCY_BUCKETS, registry=self.registry
        )
        self.inference_batch = Histogram(
            "edgerec_inference_batch_size",
            "Requests ranked together in one ONNX run",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        self.anonymous_cache = Counter(
            "edgerec_anonymous_cache_total",
            "Anonymous answers, by in-process cache result",
            ["result"],
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "edgerec_fallback_total", "Answers served from a fallback, by reason", ["reason"], registry=self.registry
        )
        self.connections_cut = Counter(
            "edgerec_connections_cut_total",
            "Connections the edge answered itself and closed, by reason: request line "
            "and headers too large (431) or too slow (408), body too slow (408) or "
            "declared too large (413), not HTTP/1.x (400, 505)",
            ["reason"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "edgerec_rate_limited_total",
            "Requests refused with 429 (client over its rate limit), by route",
            ["route"],
            registry=self.registry,
        )
        # Over several workers: the lowest data version served, the highest origin version and staleness seen.
        self.data_version = Gauge(
            "edgerec_data_version", "Data version being served", registry=self.registry, multiprocess_mode="livemin"
        )
        self.origin_version = Gauge(
            "edgerec_origin_version",
            "Latest data version seen at the origin",
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.staleness = Gauge(
            "edgerec_sync_staleness_seconds",
            "Seconds since the last successful contact with the origin",
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.sync = SyncCollector()
        self.spool = None  # the EventSpool, once the app has one
        self.worker_figures = WorkerFigures(self.registry) if self.multiprocess_dir else None
        if self.worker_figures is None:
            self.registry.register(self.sync)
            self.registry.register(SpoolCollector(self))
        self.model_load_failures = Counter(
            "edgerec_model_load_failures_total",
            "Model bundles refused at load (bad hash, golden check, ...)",
            registry=self.registry,
        )
        self.model_info = Gauge(
            "edgerec_model_info",
            "The model being served (value 1)",
            ["version"],
            registry=self.registry,
            multiprocess_mode="livemax",
        )

    def model_replaced(self, old_version: str) -> None:
        if self.multiprocess_dir:  # a series cannot be removed from the shared files: the old model reads 0
            self.model_info.labels(old_version).set(0)
        else:
            self.model_info.remove(old_version)

    def publish(self, sync: SyncStatus | None) -> None:
        """This process's sync and spool figures into the metrics (at every scrape; in multiprocess mode also
        every second from each worker, so that a scrape of one worker shows the others' recent figures)."""
        if sync is not None:
            self.data_version.set(sync.version)
            self.origin_version.set(sync.origin_version)
            staleness = sync.staleness_s()
            self.staleness.set(staleness if staleness is not None else float("nan"))
            self.sync.status = sync
        if self.worker_figures is not None:
            self.worker_figures.publish(sync, self.spool)

    def render(self, sync: SyncStatus | None) -> bytes:
        self.publish(sync)
        if not self.multiprocess_dir:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, self.multiprocess_dir)
        return generate_latest(registry)
