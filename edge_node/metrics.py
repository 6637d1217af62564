"""Prometheus metrics of one edge node: request counts and latency, served versions, sync freshness."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from origin_sync.client import SyncStatus

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


class EdgeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("edgerec_requests_total", "Requests answered, by endpoint and status",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("edgerec_request_duration_seconds", "Time to answer a recommendation request",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.fallbacks = Counter("edgerec_fallback_total", "Answers served from a fallback, by reason",
                                 ["reason"], registry=self.registry)
        self.data_version = Gauge("edgerec_data_version", "Data version being served", registry=self.registry)
        self.origin_version = Gauge("edgerec_origin_version", "Latest data version seen at the origin",
                                    registry=self.registry)
        self.staleness = Gauge("edgerec_sync_staleness_seconds",
                               "Seconds since the last successful contact with the origin", registry=self.registry)
        self.sync_errors = Gauge("edgerec_sync_errors_total", "Failed sync attempts since start",
                                 registry=self.registry)
        self.model_load_failures = Counter("edgerec_model_load_failures_total",
                                           "Model bundles refused at load (bad hash, golden check, ...)",
                                           registry=self.registry)
        self.model_info = Gauge("edgerec_model_info", "The model being served (value 1)", ["version"],
                                registry=self.registry)

    def render(self, sync: SyncStatus | None) -> bytes:
        if sync is not None:
            self.data_version.set(sync.version)
            self.origin_version.set(sync.origin_version)
            staleness = sync.staleness_s()
            self.staleness.set(staleness if staleness is not None else float("nan"))
            self.sync_errors.set(sync.errors)
        return generate_latest(self.registry)
