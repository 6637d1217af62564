"""What an operator sets for `edgerec origin serve`: one typed model, read from flags, `EDGEREC_...` variables
and an optional settings file, each value checked at start (docs/configuration.md lists them). Secrets are never
settings here: they come from the environment only (tokens.py, config.py)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import field_validator

from edgerec.core.access import AccessLogSettings
from edgerec.core.settings import (
    AtLeastOne,
    RateLimit,
    ReloadInterval,
    TcpPort,
    YesNo,
    bounded,
    checked_by,
    setting,
)
from edgerec.core.shutdown import StopSettings
from edgerec.core.tls import DEFAULT_RELOAD_INTERVAL_S
from edgerec.core.tracing import TraceSettings

_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
EVENT_SINKS = ("sql", "nats")


def parse_retention(raw: str) -> tuple[int | None, float | None]:
    """ "100000" keeps that many versions; "7d", "12h", "30m", "600s" keep that much time; "0"/"" keeps everything."""
    raw = raw.strip().lower()
    if raw in ("", "0", "none", "forever"):
        return None, None
    if raw.isdigit():
        return int(raw), None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", raw)
    if not match:
        raise ValueError(f"{raw!r} is neither a number of versions nor an age such as 7d, 12h, 30m")
    return None, float(match.group(1)) * _AGE_UNITS[match.group(2)]


def parse_event_sinks(raw: str) -> tuple[str, ...]:
    sinks = tuple(sorted({p.strip().lower() for p in raw.split(",") if p.strip()}))
    if not sinks or not set(sinks) <= set(EVENT_SINKS):
        raise ValueError("sql, nats, or sql,nats")
    return sinks


class OriginSettings(AccessLogSettings, TraceSettings, StopSettings):
    host: str = setting("127.0.0.1", "EDGEREC_ORIGIN_HOST", "listen address")
    port: TcpPort = setting(8080, "EDGEREC_ORIGIN_PORT", "listen port")
    db: str = setting("var/origin/origin.db", "EDGEREC_ORIGIN_DB", "SQLite database path, used when no DSN is set")
    dsn: str = setting(
        "",
        "EDGEREC_ORIGIN_DSN",
        "PostgreSQL DSN, e.g. postgresql://user@host:5432/db; the password comes from PGPASSWORD, never from the DSN",
    )
    blob_dir: str = setting("var/origin/blobs", "EDGEREC_BLOB_DIR", "directory of content-addressed model blobs")
    max_wait: Annotated[float, bounded(0, 300, low_open=True, what="between 0 and 300 seconds")] = setting(
        30.0, "EDGEREC_MAX_WAIT_S", "longest long-poll in seconds, at most 300"
    )
    log_retention: Annotated[str, checked_by(parse_retention)] = setting(
        "7d", "EDGEREC_LOG_RETENTION", "how much change log to keep: versions (100000) or an age (7d, 12h); 0 keeps all"
    )
    compact_interval: Annotated[float, bounded(0, low_open=True, what="must be positive")] = setting(
        60.0, "EDGEREC_COMPACT_INTERVAL_S", "seconds between compactions"
    )
    event_sink: Annotated[str, checked_by(parse_event_sinks)] = setting(
        "sql",
        "EDGEREC_EVENT_SINK",
        "where shipped events go: sql (the SQLite events file, "
        "or PostgreSQL with --dsn), nats (JetStream), or sql,nats",
    )
    events_db: str = setting(
        "", "EDGEREC_EVENTS_DB", "SQLite file of events when no DSN is set (default: events.db beside the --db file)"
    )
    nats_url: str = setting("nats://127.0.0.1:4222", "EDGEREC_NATS_URL", "NATS server of the nats event sink")
    event_retention: str = setting(
        "90d", "EDGEREC_EVENT_RETENTION", "how long raw events are kept: an age such as 90d or 12h; 0 keeps them"
    )
    admin_rate_limit_rps: RateLimit = setting(
        10.0,
        "EDGEREC_ADMIN_RATE_LIMIT_RPS",
        "admin calls a second per admin "
        "credential (per peer address for calls without a valid one), past which "
        "429; 0 = no limit",
    )
    admin_rate_limit_burst: AtLeastOne = setting(
        50, "EDGEREC_ADMIN_RATE_LIMIT_BURST", "admin calls at once above the rate"
    )
    sync_rate_limit_rps: RateLimit = setting(
        100.0,
        "EDGEREC_SYNC_RATE_LIMIT_RPS",
        "sync calls a second per sync token, "
        "all edges presenting it together (per peer address without a valid one); "
        "0 = no limit",
    )
    sync_rate_limit_burst: AtLeastOne = setting(
        500, "EDGEREC_SYNC_RATE_LIMIT_BURST", "sync calls at once above the rate"
    )
    sequential_tuning_n: AtLeastOne = setting(
        5000,
        "EDGEREC_SEQUENTIAL_TUNING_N",
        "impressions per variant at which the experiment reports' sequential test (mSPRT) is most powerful: about "
        "the traffic an experiment stage gets",
    )
    audit_retention: str = setting(
        "365d",
        "EDGEREC_AUDIT_RETENTION",
        "how long audit entries of admin calls are kept in the store: an age; 0 keeps them",
    )
    tls_cert: str = setting(
        "",
        "EDGEREC_ORIGIN_TLS_CERT_FILE",
        "PEM certificate chain of the HTTPS listener, reloaded when the file changes (unset: plain HTTP)",
    )
    tls_key: str = setting("", "EDGEREC_ORIGIN_TLS_KEY_FILE", "PEM private key of that certificate")
    client_ca: str = setting(
        "",
        "EDGEREC_ORIGIN_CLIENT_CA_FILE",
        "CA bundle edges' client certificates must chain "
        "to (mutual TLS); a presented certificate must name the regions of the token",
    )
    require_client_cert: YesNo = setting(
        False,
        "EDGEREC_ORIGIN_REQUIRE_CLIENT_CERT",
        "refuse TLS connections without a client certificate from --client-ca",
    )
    tls_reload_interval: ReloadInterval = setting(
        DEFAULT_RELOAD_INTERVAL_S,
        "EDGEREC_TLS_RELOAD_INTERVAL_S",
        "seconds between checks of the certificate files for a renewal, at most 3600",
    )
    behind_tls_proxy: YesNo = setting(
        False,
        "EDGEREC_ORIGIN_BEHIND_TLS_PROXY",
        "a proxy in front of the origin terminates TLS (lets production mode serve plain HTTP to it)",
    )
    production: YesNo = setting(
        False, None, "production mode (also EDGEREC_ENV=production): refuse weak or missing secrets and plain HTTP"
    )

    @field_validator("dsn")
    @classmethod
    def _postgresql(cls, dsn: str) -> str:
        if dsn and not dsn.startswith(("postgresql://", "postgres://")):
            raise ValueError("expected a postgresql:// URL")  # never the DSN itself: it may hold a password
        return dsn

    @field_validator("event_retention", "audit_retention")
    @classmethod
    def _age(cls, raw: str) -> str:
        versions, _ = parse_retention(raw)
        if versions is not None:
            raise ValueError(f"{raw!r}: an age such as 90d, 12h; or 0")
        return raw

    @field_validator("nats_url")
    @classmethod
    def _nats(cls, url: str) -> str:
        if not url.startswith(("nats://", "tls://")):
            raise ValueError("a nats:// or tls:// URL")
        return url
