"""What an operator sets for `edgerec edge serve`: one typed model, read from flags, `EDGEREC_...` variables and
an optional settings file, each value checked at start (docs/configuration.md lists them). Secrets are never
settings here: they come from the environment only (config.py)."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlparse

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
from origin_sync.wire.fields import parse_regions


def parse_markets(raw: str) -> dict[str, str]:
    """'GB:GB,IE;DE:DE,AT' -> {"GB": "GB", "IE": "GB", "DE": "DE", "AT": "DE"}: viewer country -> market."""
    markets: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in raw.split(";"))):
        market, sep, countries = part.partition(":")
        try:
            (market,) = parse_regions(market)
            for country in parse_regions(countries) if sep else ():
                markets[country] = market
        except ValueError as exc:
            raise ValueError(f"{part!r}: {exc}") from None
    return markets


# The ranges only the edge has (the shared ones are edgerec.core.settings' types).
NotNegative = Annotated[float, bounded(0, what="at least 0")]
Seconds300 = Annotated[float, bounded(0, 300, low_open=True, what="more than 0 and at most 300 seconds")]
Seconds600 = Annotated[float, bounded(0, 600, low_open=True, what="more than 0 and at most 600 seconds")]
ProfileWait = Annotated[float, bounded(0, 10000, low_open=True, what="more than 0 and at most 10000 ms")]


class EdgeSettings(AccessLogSettings, TraceSettings, StopSettings):
    host: str = setting("127.0.0.1", "EDGEREC_EDGE_HOST", "listen address")
    port: TcpPort = setting(8000, "EDGEREC_EDGE_PORT", "listen port")
    origin: str = setting(
        "http://127.0.0.1:8080",
        "EDGEREC_ORIGIN_URL",
        "origin base URL, or several comma-separated to fail over between in order",
    )
    regions: str = setting("", "EDGEREC_REGIONS", "comma-separated market codes this edge serves, e.g. DE,FR")
    data_dir: str = setting(
        "var/edge",
        "EDGEREC_EDGE_DATA_DIR",
        "local directory for the edge's own files: its persisted copy and the event spool",
    )
    origin_public_key: str = setting(
        "",
        "EDGEREC_ORIGIN_PUBLIC_KEY",
        "the origin's Ed25519 public key(s) every "
        "payload is verified with: a file path, PEM or base64, comma-separated during "
        "a key rotation",
    )
    max_staleness: NotNegative = setting(
        0.0,
        "EDGEREC_MAX_STALENESS_S",
        "/readyz fails after this many seconds without a verified answer from the origin; 0 = never",
    )
    sync_wait: Seconds300 = setting(25.0, "EDGEREC_SYNC_WAIT_S", "long-poll wait asked of the origin, s, at most 300")
    sync_backoff_max: Seconds600 = setting(
        10.0, "EDGEREC_SYNC_BACKOFF_MAX_S", "longest pause between failed sync attempts, s, at most 600"
    )
    max_body_bytes: Annotated[int, bounded(1024, what="at least 1024")] = setting(
        65536, "EDGEREC_MAX_BODY_BYTES", "largest accepted request body (at least 1024)"
    )
    max_header_bytes: Annotated[int, bounded(1024, 1024 * 1024, what="from 1024 to 1048576")] = setting(
        16384, "EDGEREC_MAX_HEADER_BYTES", "largest request line plus headers; over it 431 and the connection is closed"
    )
    header_timeout: Seconds600 = setting(
        10.0,
        "EDGEREC_HEADER_TIMEOUT_S",
        "seconds a request line and headers may take "
        "from the connection or the request's first byte; over it 408, closed",
    )
    max_k: Annotated[int, bounded(1, 1000, what="between 1 and 1000")] = setting(
        100, "EDGEREC_MAX_K", "largest k a request may ask for (1 to 1000)"
    )
    workers: Annotated[int, bounded(1, 256, what="between 1 and 256")] = setting(
        1, "EDGEREC_WORKERS", "server worker processes, each with its own synced copy (1 to 256)"
    )
    geo_headers: str = setting(
        "CloudFront-Viewer-Country,CF-IPCountry", "EDGEREC_GEO_HEADERS", "headers the CDN puts the viewer's country in"
    )
    markets: Annotated[str, checked_by(parse_markets)] = setting(
        "",
        "EDGEREC_MARKETS",
        "viewer countries served by a market, e.g. 'GB:GB,IE,IM;DE:DE,AT'; a country not listed is its own market",
    )
    untrusted_cdn_headers: Literal["ignore", "refuse"] = setting(
        "ignore", "EDGEREC_UNTRUSTED_CDN_HEADERS", "CDN headers without the shared secret: ignore, or refuse (403)"
    )
    proxy_hops: AtLeastOne = setting(1, "EDGEREC_PROXY_HOPS", "X-Forwarded-For entries added by trusted proxies")
    cache_s_maxage: AtLeastOne = setting(
        30, "EDGEREC_CACHE_S_MAXAGE", "how long shared caches keep anonymous answers, s"
    )
    max_per_group: Annotated[int, bounded(0, what="at least 0")] = setting(
        0, "EDGEREC_MAX_PER_GROUP", "diversity: at most this many offers of one product group; 0 = off"
    )
    just_bought_days: NotNegative = setting(
        1.0,
        "EDGEREC_JUST_BOUGHT_DAYS",
        "exclude items bought this many days ago or less, when requests send age_days; 0 = off",
    )
    model_budget_ms: Annotated[float, bounded(0, low_open=True, what="more than 0")] = setting(
        25.0,
        "EDGEREC_MODEL_BUDGET_MS",
        "a model run over this sends answers to the popularity fallback for a cool-down",
    )
    event_spool_max_mb: AtLeastOne = setting(
        1024,
        "EDGEREC_EVENT_SPOOL_MAX_MB",
        "most disk the event spool may use, MiB; past it new events are dropped and counted",
    )
    events: Literal["on", "off"] = setting(
        "on",
        "EDGEREC_EVENTS",
        "on: an impression per answer and POST /v1/events, spooled and shipped to the origin; off: neither (404)",
    )
    events_ack: Literal["write", "fsync"] = setting(
        "write",
        "EDGEREC_EVENTS_ACK",
        "when POST /v1/events answers 202: write, once its events are written to the "
        "spool's segment file; fsync, once they are fdatasync'ed as well",
    )
    rate_limit_rps: RateLimit = setting(
        50.0,
        "EDGEREC_RATE_LIMIT_RPS",
        "requests a second one client may make to "
        "/v1/recommendations and /v1/events (per worker), past which 429; 0 = no limit",
    )
    rate_limit_burst: AtLeastOne = setting(
        100, "EDGEREC_RATE_LIMIT_BURST", "requests one client may make at once above its rate"
    )
    profile_store: Literal["embedded", "redis", "off"] = setting(
        "embedded",
        "EDGEREC_PROFILE_STORE",
        "shopper profiles: embedded (memory over an encrypted file in --profile-dir), redis (the region's Redis, "
        "EDGEREC_PROFILE_REDIS_URL), or off",
    )
    profile_dir: str = setting(
        "", "EDGEREC_PROFILE_DIR", "directory of the embedded profile store (default: <data dir>/profiles)"
    )
    profile_budget_mb: Annotated[int, bounded(1, 1024 * 1024, what="from 1 to 1048576 MiB")] = setting(
        256, "EDGEREC_PROFILE_BUDGET_MB", "memory budget of the embedded profile store, MiB of encoded profiles"
    )
    profile_retention: Annotated[float, bounded(0, 36500, low_open=True, what="more than 0 and at most 36500 days")] = (
        setting(365.0, "EDGEREC_PROFILE_RETENTION", "days a profile is kept after its last write (a miss after it)")
    )
    profile_fsync_ms: Annotated[int, bounded(0, 60000, what="from 0 to 60000 ms")] = setting(
        1000, "EDGEREC_PROFILE_FSYNC_MS", "group fsync of the embedded store every this many ms; 0 = every write"
    )
    profile_compact_interval: Annotated[float, bounded(0, what="at least 0 (0 = never)")] = setting(
        3600.0, "EDGEREC_PROFILE_COMPACT_INTERVAL", "seconds between compactions of the embedded store; 0 = never"
    )
    profile_redis_prefix: str = setting(
        "edgerec:profile:", "EDGEREC_PROFILE_REDIS_PREFIX", "key prefix of the profiles in Redis"
    )
    profile_read_timeout_ms: ProfileWait = setting(
        5.0, "EDGEREC_PROFILE_READ_TIMEOUT_MS", "longest wait for a profile from Redis, past which anonymous"
    )
    profile_write_timeout_ms: ProfileWait = setting(
        50.0, "EDGEREC_PROFILE_WRITE_TIMEOUT_MS", "longest wait for a profile update in Redis"
    )
    # TLS settings hold paths, never key material, so flags are fine for them.
    origin_ca: str = setting(
        "",
        "EDGEREC_ORIGIN_CA_FILE",
        "PEM CA bundle the origin's certificate is verified against (default: the system's trust store)",
    )
    client_cert: str = setting(
        "",
        "EDGEREC_CLIENT_CERT_FILE",
        "mutual TLS: PEM client certificate presented to "
        "the origin, naming this edge's regions (edge.<region> or spiffe://edgerec/edge/<R>)",
    )
    client_key: str = setting("", "EDGEREC_CLIENT_KEY_FILE", "PEM private key of the client certificate")
    tls_cert: str = setting(
        "",
        "EDGEREC_EDGE_TLS_CERT_FILE",
        "serve shoppers HTTPS with this PEM certificate chain, where no CDN or load balancer terminates TLS",
    )
    tls_key: str = setting("", "EDGEREC_EDGE_TLS_KEY_FILE", "PEM private key of the listener's certificate")
    tls_reload_interval: ReloadInterval = setting(
        DEFAULT_RELOAD_INTERVAL_S,
        "EDGEREC_TLS_RELOAD_INTERVAL_S",
        "seconds between checks of the listener's and the client certificate's files",
    )
    production: YesNo = setting(
        False,
        None,
        "production mode (also EDGEREC_ENV=production): refuse weak secrets and a plain HTTP origin beyond loopback",
    )

    @field_validator("origin")
    @classmethod
    def _http_urls(cls, urls: str) -> str:
        # Several origins (on one database), comma-separated: the syncer fails over between them in this order.
        origins = [u.strip() for u in urls.split(",") if u.strip()] or [urls]
        for url in origins:
            parsed = urlparse(url)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise ValueError(f"{url!r} is not an http(s) URL")
        if len({urlparse(u).scheme for u in origins}) > 1:
            raise ValueError(f"{urls!r} mixes http and https origins")
        return ",".join(origins)

    @field_validator("regions")
    @classmethod
    def _regions(cls, raw: str) -> str:
        return ",".join(parse_regions(raw))

    @field_validator("profile_redis_prefix")
    @classmethod
    def _profile_prefix(cls, prefix: str) -> str:
        if not prefix or len(prefix) > 64 or not prefix.isprintable() or " " in prefix:
            raise ValueError("1 to 64 printable characters without spaces")
        return prefix
