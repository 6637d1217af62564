"""The edge's configuration as it runs: its settings (settings.py: flags, environment, settings file) with the
secrets and TLS files resolved and checked together at start, and handed as is to worker processes."""

from __future__ import annotations

import json
import os
import ssl
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlparse

from edgerec.core.service import ServiceConfig
from edgerec.core.settings import (
    ConfigError,
    SettingError,
    production_mode,
    require_strong_secrets,
    require_tls_beyond_loopback,
    secret_from_env,
    secret_values_from_env,
)
from edgerec.core.tls import DEFAULT_RELOAD_INTERVAL_S, client_context, server_context
from origin_sync.wire.fields import parse_regions
from origin_sync.wire.signing import Verifier

from .cdn import CdnPolicy
from .rules import Rules
from .settings import EdgeSettings, parse_markets


@dataclass(frozen=True)
class EdgeConfig(ServiceConfig):
    settings_class = EdgeSettings

    origin_url: str
    regions: tuple[str, ...]
    sync_token: str
    data_dir: Path
    max_body_bytes: int = 64 * 1024
    max_header_bytes: int = 16 * 1024  # request line plus headers; over it 431 and the connection is closed
    header_timeout_s: float = 10.0  # time for a request line and headers to arrive; over it 408, closed
    max_k: int = 100
    default_k: int = 10
    sync_wait_s: float = 25.0
    origin_public_key: str = ""  # the origin's Ed25519 public key(s): file path, PEM or base64; comma-separated
    max_staleness_s: float = 0.0  # readiness fails past this many seconds without the origin; 0 = never
    sync_backoff_max_s: float = 10.0
    workers: int = 1
    event_spool_max_mb: int = 1024  # the event spool's bound on disk; past it new events are dropped and counted
    events: bool = True  # impressions recorded and /v1/events taken; off: neither (EDGEREC_EVENTS=off)
    events_ack: str = "write"  # a 202 of /v1/events once its events are written, or "fsync": fdatasync'ed too
    pseudonym_key: str = ""  # EDGEREC_PSEUDONYM_KEY: the keyed hash of shopper ids in events (secret)
    rate_limit_rps: float = 50.0  # per client (trusted X-Forwarded-For, else the peer); 0 = no limit
    rate_limit_burst: int = 100
    cdn: CdnPolicy = CdnPolicy()
    rules: Rules = Rules()
    origin_ca_file: str = ""  # CA bundle the origin's certificate is verified against ("" = system store)
    client_cert_file: str = ""  # mutual TLS: the certificate (naming this edge's regions) shown to the origin
    client_key_file: str = ""
    tls_cert_file: str = ""  # the shopper listener serves HTTPS with these ("" = plain HTTP behind a CDN/LB)
    tls_key_file: str = ""
    tls_reload_interval_s: float = DEFAULT_RELOAD_INTERVAL_S  # checks of the listener's and client's certificate files
    # Shopper profiles (edge_node.shoppers): "embedded", "redis" or "off"; no store without a pseudonym key.
    profile_store: str = "embedded"
    profile_dir: str = ""  # the embedded store's directory ("" = <data_dir>/profiles)
    profile_budget_bytes: int = 256 * 1024 * 1024
    profile_retention_s: float = 365 * 86400.0
    profile_fsync_interval_s: float = 1.0
    profile_compact_interval_s: float = 3600.0
    profile_redis_url: str = ""  # EDGEREC_PROFILE_REDIS_URL (secret: it may hold a password)
    profile_redis_prefix: str = "edgerec:profile:"
    profile_read_timeout_s: float = 0.005
    profile_write_timeout_s: float = 0.05

    @property
    def profile_directory(self) -> Path:
        return Path(self.profile_dir) if self.profile_dir else self.data_dir / "profiles"

    def origin_ssl_context(self) -> ssl.SSLContext | None:
        """The client context for every call to the origin, or None for plain HTTP without TLS settings."""
        if not (self.origin_url.startswith("https://") or self.origin_ca_file or self.client_cert_file):
            return None
        return client_context(
            Path(self.origin_ca_file) if self.origin_ca_file else None,
            Path(self.client_cert_file) if self.client_cert_file else None,
            Path(self.client_key_file) if self.client_key_file else None,
        )

    def __repr__(self) -> str:  # no secret in a log line or a traceback
        return f"EdgeConfig(port={self.port}, regions={self.regions}, origin_url={self.origin_url!r})"

    @classmethod
    def from_settings(cls, settings: EdgeSettings) -> "EdgeConfig":
        try:
            regions = parse_regions(settings.regions)
        except ValueError as exc:
            raise ConfigError(f"--regions/EDGEREC_REGIONS: {exc}") from None
        # During a rotation the variable holds "new,old"; an edge presents the first.
        sync_token, pseudonym_key, cdn_secrets = _edge_secrets()
        if not sync_token:
            raise ConfigError(
                "EDGEREC_SYNC_TOKEN must be set (the token this edge presents to the origin), "
                "or EDGEREC_SYNC_TOKEN_FILE naming a file that holds it"
            )
        if not settings.origin_public_key.strip():
            raise ConfigError(
                "--origin-public-key/EDGEREC_ORIGIN_PUBLIC_KEY must be set: the origin's Ed25519 "
                "public key, so that the edge applies nothing unsigned"
            )
        try:
            Verifier.from_config(settings.origin_public_key)
        except (ValueError, TypeError, OSError) as exc:
            raise ConfigError(f"--origin-public-key/EDGEREC_ORIGIN_PUBLIC_KEY: {exc}") from None
        production = production_mode(settings.production)
        if production:
            require_strong_secrets("EDGEREC_SYNC_TOKEN", (sync_token,))
            require_strong_secrets("EDGEREC_CDN_SECRET", cdn_secrets, required=False)
            require_strong_secrets("EDGEREC_PSEUDONYM_KEY", (pseudonym_key,) if pseudonym_key else (), required=False)
            for origin in settings.origin.split(","):
                require_tls_beyond_loopback("--origin/EDGEREC_ORIGIN_URL", origin.strip())
        _check_tls_files(settings)
        profile_redis_url = _profile_redis_url(settings)
        settings.check_tracing_installed()
        cdn = CdnPolicy(
            secrets=cdn_secrets,
            geo_headers=tuple(h.strip().lower() for h in settings.geo_headers.split(",") if h.strip()),
            untrusted=settings.untrusted_cdn_headers,
            markets=parse_markets(settings.markets),
            proxy_hops=settings.proxy_hops,
            s_maxage=settings.cache_s_maxage,
            stale_while_revalidate=2 * settings.cache_s_maxage,
        )
        rules = Rules(
            max_per_group=settings.max_per_group,
            just_bought_days=settings.just_bought_days,
            model_budget_ms=settings.model_budget_ms,
        )
        return cls(
            **cls.common_fields(settings, production),
            origin_url=settings.origin,
            regions=regions,
            sync_token=sync_token,
            data_dir=Path(settings.data_dir),
            max_body_bytes=settings.max_body_bytes,
            max_header_bytes=settings.max_header_bytes,
            header_timeout_s=settings.header_timeout,
            sync_wait_s=settings.sync_wait,
            origin_public_key=settings.origin_public_key,
            max_staleness_s=settings.max_staleness,
            sync_backoff_max_s=settings.sync_backoff_max,
            max_k=settings.max_k,
            default_k=min(10, settings.max_k),
            workers=settings.workers,
            event_spool_max_mb=settings.event_spool_max_mb,
            events=settings.events == "on",
            events_ack=settings.events_ack,
            pseudonym_key=pseudonym_key,
            rate_limit_rps=settings.rate_limit_rps,
            rate_limit_burst=settings.rate_limit_burst,
            cdn=cdn,
            rules=rules,
            origin_ca_file=settings.origin_ca,
            client_cert_file=settings.client_cert,
            client_key_file=settings.client_key,
            tls_cert_file=settings.tls_cert,
            tls_key_file=settings.tls_key,
            tls_reload_interval_s=settings.tls_reload_interval,
            profile_store=settings.profile_store,
            profile_dir=settings.profile_dir,
            profile_budget_bytes=settings.profile_budget_mb * 1024 * 1024,
            profile_retention_s=settings.profile_retention * 86400.0,
            profile_fsync_interval_s=settings.profile_fsync_ms / 1000.0,
            profile_compact_interval_s=settings.profile_compact_interval,
            profile_redis_url=profile_redis_url,
            profile_redis_prefix=settings.profile_redis_prefix,
            profile_read_timeout_s=settings.profile_read_timeout_ms / 1000.0,
            profile_write_timeout_s=settings.profile_write_timeout_ms / 1000.0,
        )


def _profile_redis_url(settings: EdgeSettings) -> str:
    """The Redis URL of `--profile-store redis` (a secret: from the environment only), checked; and the refusal
    of an embedded store shared by several worker processes."""
    url = secret_from_env("EDGEREC_PROFILE_REDIS_URL")
    if settings.profile_store == "embedded" and settings.workers > 1:
        raise ConfigError(
            f"--profile-store/EDGEREC_PROFILE_STORE: the embedded store belongs to one process; with --workers "
            f"{settings.workers} use redis (shared by the workers) or off"
        )
    if settings.profile_store != "redis":
        return ""
    if not url:
        raise ConfigError(
            "EDGEREC_PROFILE_REDIS_URL must be set with --profile-store redis (redis://HOST:PORT/DB, rediss://... "
            "or unix://PATH), or EDGEREC_PROFILE_REDIS_URL_FILE naming a file that holds it"
        )
    if urlparse(url).scheme not in ("redis", "rediss", "unix"):
        raise ConfigError("EDGEREC_PROFILE_REDIS_URL: expected a redis://, rediss:// or unix:// URL")
    return url


def _check_tls_files(settings: EdgeSettings) -> None:
    """Build the TLS contexts once, so that a missing or mismatched file is a clear error at start."""
    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise ConfigError("--tls-cert/EDGEREC_EDGE_TLS_CERT_FILE and --tls-key/EDGEREC_EDGE_TLS_KEY_FILE go together")
    if bool(settings.client_cert) != bool(settings.client_key):
        raise ConfigError("--client-cert/EDGEREC_CLIENT_CERT_FILE and --client-key/EDGEREC_CLIENT_KEY_FILE go together")
    try:
        if settings.tls_cert:
            server_context(Path(settings.tls_cert), Path(settings.tls_key))
        client_context(
            Path(settings.origin_ca) if settings.origin_ca else None,
            Path(settings.client_cert) if settings.client_cert else None,
            Path(settings.client_key) if settings.client_key else None,
        )
    except SettingError as exc:
        raise ConfigError(f"--tls-cert/--origin-ca/--client-cert: {exc}") from None


def _edge_secrets() -> tuple[str, str, tuple[str, ...]]:
    """(sync token presented, pseudonym key, accepted CDN secrets), each from its variable or `<VAR>_FILE`.
    During a rotation EDGEREC_SYNC_TOKEN holds "new,old"; an edge presents the first."""
    sync_tokens = secret_values_from_env("EDGEREC_SYNC_TOKEN")
    return (sync_tokens[0] if sync_tokens else "", _pseudonym_key(), secret_values_from_env("EDGEREC_CDN_SECRET"))


def _pseudonym_key() -> str:
    key = secret_from_env("EDGEREC_PSEUDONYM_KEY")
    if key and len(key) < 16:
        raise ConfigError("EDGEREC_PSEUDONYM_KEY: a secret of at least 16 characters (the same on every edge)")
    return key


CONFIG_ENV = "EDGEREC_EDGE_CONFIG_JSON"


def config_to_env(config: EdgeConfig) -> None:
    """Hand a parsed config to worker processes, which inherit the environment; secrets stay in their own variables."""
    data = asdict(config)
    data.pop("sync_token")
    data.pop("pseudonym_key")
    data.pop("profile_redis_url")
    data["cdn"].pop("secrets")
    os.environ[CONFIG_ENV] = json.dumps(data, default=str)


def config_from_env() -> EdgeConfig:
    data = json.loads(os.environ[CONFIG_ENV])
    cdn = data.pop("cdn")
    rules = data.pop("rules")
    sync_token, pseudonym_key, cdn_secrets = _edge_secrets()
    return EdgeConfig(
        **{**data, "regions": tuple(data["regions"]), "data_dir": Path(data["data_dir"])},
        sync_token=sync_token,
        pseudonym_key=pseudonym_key,
        profile_redis_url=secret_from_env("EDGEREC_PROFILE_REDIS_URL") if data["profile_store"] == "redis" else "",
        cdn=CdnPolicy(**{**cdn, "geo_headers": tuple(cdn["geo_headers"])}, secrets=cdn_secrets),
        rules=Rules(**rules),
    )
