"""What every service's config holds alike, beside its own (edge_node.config, origin_sync.origin.config): where it
listens, its access log, tracing, stop and production mode, taken from the settings every service has."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from .access import parse_access_log
from .settings import ConfiguredBy
from .shutdown import DEFAULT_DRAIN_S, DEFAULT_SHUTDOWN_TIMEOUT_S


class CommonSettings(Protocol):
    """The settings every service's model has: its own listen address and port, and those of AccessLogSettings,
    TraceSettings and StopSettings."""

    host: str
    port: int
    access_log: str
    trace_sample: float
    trace_exporter: str
    drain: float
    shutdown_timeout: float


@dataclass(frozen=True, kw_only=True)
class ServiceConfig(ConfiguredBy):
    """The base of each service's config dataclass; keyword-only, so that a service's own fields without a default
    may follow these."""

    host: str
    port: int
    access_log_rate: float = 0.0  # the share of requests with an access log line (EDGEREC_ACCESS_LOG); 0 = off
    production: bool = False
    trace_sample: float = 0.0  # share of new traces recorded; 0 = tracing off (EDGEREC_TRACE_SAMPLE)
    trace_exporter: str = "otlp"
    drain_s: float = DEFAULT_DRAIN_S  # after SIGTERM, /readyz 503 draining while requests go on (EDGEREC_DRAIN_S)
    shutdown_timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S  # SIGTERM to exit, drain included

    @staticmethod
    def common_fields(settings: CommonSettings, production: bool) -> dict[str, Any]:
        """The fields above from a service's settings; `production` as production_mode decided it."""
        return {
            "host": settings.host,
            "port": settings.port,
            "access_log_rate": parse_access_log(settings.access_log),
            "production": production,
            "trace_sample": settings.trace_sample,
            "trace_exporter": settings.trace_exporter,
            "drain_s": settings.drain,
            "shutdown_timeout_s": settings.shutdown_timeout,
        }
