"""The origin's own Prometheus metrics (`GET /metrics`, no auth, on the origin's port)."""

from __future__ import annotations


class OriginMetrics:
    """One registry per app, so that two origins in one process (tests) never share a counter."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter

        self.registry = CollectorRegistry(auto_describe=True)
        self.rate_limited = Counter(
            "edgerec_origin_rate_limited_total",
            "Calls refused with 429 (caller over its rate limit), by endpoint group (admin, sync)",
            ["endpoint"],
            registry=self.registry,
        )
        self.admin_calls = Counter(
            "edgerec_origin_admin_calls_total", "Admin calls audited, by status", ["status"], registry=self.registry
        )
        self.credential_reloads = Counter(
            "edgerec_origin_credential_reloads_total",
            "Reloads of the token settings (SIGHUP or a changed token file), by result "
            "(ok, failed: the previous credentials stayed in force)",
            ["result"],
            registry=self.registry,
        )
        self.audit_failures = Counter(
            "edgerec_origin_audit_write_failures_total",
            "Audit entries that could not be stored (the log line was still written)",
            registry=self.registry,
        )
        self.unattributed_events = Counter(
            "edgerec_origin_events_unattributed_total",
            "Feedback events (click, add_to_cart, purchase) stored with a request_id "
            "that no impression stored so far carries, by kind",
            ["kind"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
