"""Edge node configuration: one typed place, read from flags and environment, validated at start."""

from __future__ import annotations

import argparse
import json
import os
import ssl
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlparse

from edgerec.core.settings import (
    SettingError,
    parse_flag,
    production_mode,
    require_strong_secrets,
    require_tls_beyond_loopback,
    secret_from_env,
    secret_values_from_env,
)
from edgerec.core.tls import DEFAULT_RELOAD_INTERVAL_S, client_context, server_context
from origin_sync.wire.protocol import Verifier, parse_regions

from .cdn import UNTRUSTED_IGNORE, UNTRUSTED_REFUSE, CdnPolicy
from .rules import Rules


class ConfigError(SettingError):
    """A setting is missing or invalid; the message names the flag and the variable."""


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
            raise ConfigError(f"--markets/EDGEREC_MARKETS: {part!r}: {exc}") from None
    return markets


@dataclass(frozen=True)
class EdgeConfig:
    host: str
    port: int
    origin_url: str
    regions: tuple[str, ...]
    sync_token: str
    data_dir: Path
    max_body_bytes: int = 64 * 1024
    max_header_bytes: int = 16 * 1024  # request line plus headers; over it 431 and the connection is closed
    header_timeout_s: float = 10.0     # time for a request line and headers to arrive; over it 408, closed
    max_k: int = 100
    default_k: int = 10
    sync_wait_s: float = 25.0
    origin_public_key: str = ""     # the origin's Ed25519 public key(s): file path, PEM or base64; comma-separated
    max_staleness_s: float = 0.0    # readiness fails past this many seconds without the origin; 0 = never
    sync_backoff_max_s: float = 10.0
    workers: int = 1
    event_spool_max_mb: int = 1024  # the event spool's bound on disk; past it new events are dropped and counted
    events: bool = True             # impressions recorded and /v1/events taken; off: neither (EDGEREC_EVENTS=off)
    events_ack: str = "write"       # a 202 of /v1/events once its events are written, or "fsync": fdatasync'ed too
    pseudonym_key: str = ""         # EDGEREC_PSEUDONYM_KEY: the keyed hash of shopper ids in events (secret)
    rate_limit_rps: float = 50.0    # per client (trusted X-Forwarded-For, else the peer); 0 = no limit
    rate_limit_burst: int = 100
    cdn: CdnPolicy = CdnPolicy()
    rules: Rules = Rules()
    origin_ca_file: str = ""        # CA bundle the origin's certificate is verified against ("" = system store)
    client_cert_file: str = ""      # mutual TLS: the certificate (naming this edge's regions) shown to the origin
    client_key_file: str = ""
    tls_cert_file: str = ""         # the shopper listener serves HTTPS with these ("" = plain HTTP behind a CDN/LB)
    tls_key_file: str = ""
    tls_reload_interval_s: float = DEFAULT_RELOAD_INTERVAL_S  # checks of the listener's and client's certificate files
    production: bool = False

    def origin_ssl_context(self) -> ssl.SSLContext | None:
        """The client context for every call to the origin, or None for plain HTTP without TLS settings."""
        if not (self.origin_url.startswith("https://") or self.origin_ca_file or self.client_cert_file):
            return None
        return client_context(Path(self.origin_ca_file) if self.origin_ca_file else None,
                              Path(self.client_cert_file) if self.client_cert_file else None,
                              Path(self.client_key_file) if self.client_key_file else None)

    def __repr__(self) -> str:  # no secret in a log line or a traceback
        return f"EdgeConfig(port={self.port}, regions={self.regions}, origin_url={self.origin_url!r})"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        env = os.environ.get
        parser.add_argument("--host", default=env("EDGEREC_EDGE_HOST", "127.0.0.1"),
                            help="listen address (EDGEREC_EDGE_HOST, default 127.0.0.1)")
        parser.add_argument("--port", type=int, default=int(env("EDGEREC_EDGE_PORT", "8000")),
                            help="listen port (EDGEREC_EDGE_PORT, default 8000)")
        parser.add_argument("--origin", default=env("EDGEREC_ORIGIN_URL", "http://127.0.0.1:8080"),
                            help="origin base URL (EDGEREC_ORIGIN_URL)")
        parser.add_argument("--regions", default=env("EDGEREC_REGIONS", ""),
                            help="comma-separated market codes this edge serves, e.g. DE,FR (EDGEREC_REGIONS)")
        parser.add_argument("--data-dir", default=env("EDGEREC_EDGE_DATA_DIR", "var/edge"),
                            help="local directory for the edge's persisted copy (EDGEREC_EDGE_DATA_DIR)")
        parser.add_argument("--origin-public-key", default=env("EDGEREC_ORIGIN_PUBLIC_KEY", ""),
                            help="the origin's Ed25519 public key(s) every payload is verified with: a file path, "
                                 "PEM or base64, comma-separated during a key rotation (EDGEREC_ORIGIN_PUBLIC_KEY)")
        parser.add_argument("--max-staleness", type=float, default=float(env("EDGEREC_MAX_STALENESS_S", "0")),
                            help="/readyz fails after this many seconds without a verified answer from the origin; "
                                 "0 = never (EDGEREC_MAX_STALENESS_S, default 0)")
        parser.add_argument("--sync-wait", type=float, default=float(env("EDGEREC_SYNC_WAIT_S", "25")),
                            help="long-poll wait asked of the origin, s (EDGEREC_SYNC_WAIT_S, default 25)")
        parser.add_argument("--sync-backoff-max", type=float, default=float(env("EDGEREC_SYNC_BACKOFF_MAX_S", "10")),
                            help="longest pause between failed sync attempts, s (EDGEREC_SYNC_BACKOFF_MAX_S, default 10)")
        parser.add_argument("--max-body-bytes", type=int, default=int(env("EDGEREC_MAX_BODY_BYTES", "65536")),
                            help="largest accepted request body (EDGEREC_MAX_BODY_BYTES, default 65536)")
        parser.add_argument("--max-header-bytes", type=int, default=int(env("EDGEREC_MAX_HEADER_BYTES", "16384")),
                            help="largest request line plus headers; over it 431 and the connection is closed "
                                 "(EDGEREC_MAX_HEADER_BYTES, default 16384)")
        parser.add_argument("--header-timeout", type=float, default=float(env("EDGEREC_HEADER_TIMEOUT_S", "10")),
                            help="seconds a request line and headers may take from the connection or the request's "
                                 "first byte; over it 408 and the connection is closed (EDGEREC_HEADER_TIMEOUT_S, "
                                 "default 10)")
        parser.add_argument("--max-k", type=int, default=int(env("EDGEREC_MAX_K", "100")),
                            help="largest k a request may ask for (EDGEREC_MAX_K, default 100)")
        parser.add_argument("--workers", type=int, default=int(env("EDGEREC_WORKERS", "1")),
                            help="server worker processes, each with its own synced copy (EDGEREC_WORKERS, default 1)")
        parser.add_argument("--geo-headers", default=env("EDGEREC_GEO_HEADERS", "CloudFront-Viewer-Country,CF-IPCountry"),
                            help="headers the CDN puts the viewer's country in (EDGEREC_GEO_HEADERS)")
        parser.add_argument("--markets", default=env("EDGEREC_MARKETS", ""),
                            help="viewer countries served by a market, e.g. 'GB:GB,IE,IM;DE:DE,AT,CH' (EDGEREC_MARKETS); "
                                 "a country not listed is its own market")
        parser.add_argument("--untrusted-cdn-headers", choices=(UNTRUSTED_IGNORE, UNTRUSTED_REFUSE),
                            default=env("EDGEREC_UNTRUSTED_CDN_HEADERS", UNTRUSTED_IGNORE),
                            help="CDN headers without the shared secret: ignore them or refuse the request with 403 "
                                 "(EDGEREC_UNTRUSTED_CDN_HEADERS, default ignore)")
        parser.add_argument("--proxy-hops", type=int, default=int(env("EDGEREC_PROXY_HOPS", "1")),
                            help="X-Forwarded-For entries added by trusted proxies (EDGEREC_PROXY_HOPS, default 1)")
        parser.add_argument("--cache-s-maxage", type=int, default=int(env("EDGEREC_CACHE_S_MAXAGE", "30")),
                            help="how long shared caches keep anonymous answers, s (EDGEREC_CACHE_S_MAXAGE, default 30)")
        parser.add_argument("--max-per-group", type=int, default=int(env("EDGEREC_MAX_PER_GROUP", "0")),
                            help="diversity: at most this many offers of one product group, 0 = off "
                                 "(EDGEREC_MAX_PER_GROUP)")
        parser.add_argument("--just-bought-days", type=float, default=float(env("EDGEREC_JUST_BOUGHT_DAYS", "1")),
                            help="exclude items bought this many days ago or less, when requests send age_days "
                                 "(EDGEREC_JUST_BOUGHT_DAYS, default 1; 0 = off)")
        parser.add_argument("--event-spool-max-mb", type=int, default=int(env("EDGEREC_EVENT_SPOOL_MAX_MB", "1024")),
                            help="most disk the event spool may use, MiB; past it new events are dropped and counted "
                                 "(EDGEREC_EVENT_SPOOL_MAX_MB, default 1024)")
        parser.add_argument("--events", choices=("on", "off"), default=env("EDGEREC_EVENTS", "on"),
                            help="on: record an impression per answer and take POST /v1/events (spooled, shipped to "
                                 "the origin); off: neither, and /v1/events answers 404 (EDGEREC_EVENTS, default on)")
        parser.add_argument("--events-ack", choices=("write", "fsync"), default=env("EDGEREC_EVENTS_ACK", "write"),
                            help="when POST /v1/events answers 202: write, once its events are written to the "
                                 "spool's segment file (a SIGKILL of the edge loses none); fsync, once they are "
                                 "fdatasync'ed as well (a crash of the machine loses none; each answer waits for a "
                                 "disk flush, shared by concurrent requests) (EDGEREC_EVENTS_ACK, default write)")
        parser.add_argument("--rate-limit-rps", type=float, default=float(env("EDGEREC_RATE_LIMIT_RPS", "50")),
                            help="requests a second one client may make to /v1/recommendations and /v1/events "
                                 "(per edge worker), past which it gets 429; the client is the trusted CDN's "
                                 "X-Forwarded-For address, else the connection's; 0 = no limit "
                                 "(EDGEREC_RATE_LIMIT_RPS, default 50)")
        parser.add_argument("--rate-limit-burst", type=int, default=int(env("EDGEREC_RATE_LIMIT_BURST", "100")),
                            help="requests one client may make at once above its rate (EDGEREC_RATE_LIMIT_BURST, "
                                 "default 100)")
        parser.add_argument("--model-budget-ms", type=float, default=float(env("EDGEREC_MODEL_BUDGET_MS", "25")),
                            help="a model run over this sends answers to the popularity fallback for a cool-down "
                                 "(EDGEREC_MODEL_BUDGET_MS, default 25)")
        # TLS settings hold paths, never key material, so flags are fine for them.
        parser.add_argument("--origin-ca", default=env("EDGEREC_ORIGIN_CA_FILE", ""),
                            help="PEM CA bundle the origin's certificate is verified against "
                                 "(EDGEREC_ORIGIN_CA_FILE; default: the system's trust store)")
        parser.add_argument("--client-cert", default=env("EDGEREC_CLIENT_CERT_FILE", ""),
                            help="mutual TLS: PEM client certificate presented to the origin, naming this edge's "
                                 "regions (CN/SAN edge.<region> or spiffe://edgerec/edge/<REGION>) "
                                 "(EDGEREC_CLIENT_CERT_FILE)")
        parser.add_argument("--client-key", default=env("EDGEREC_CLIENT_KEY_FILE", ""),
                            help="PEM private key of the client certificate (EDGEREC_CLIENT_KEY_FILE)")
        parser.add_argument("--tls-cert", default=env("EDGEREC_EDGE_TLS_CERT_FILE", ""),
                            help="serve shoppers HTTPS with this PEM certificate chain, where no CDN or load "
                                 "balancer terminates TLS (EDGEREC_EDGE_TLS_CERT_FILE)")
        parser.add_argument("--tls-key", default=env("EDGEREC_EDGE_TLS_KEY_FILE", ""),
                            help="PEM private key of the listener's certificate (EDGEREC_EDGE_TLS_KEY_FILE)")
        parser.add_argument("--tls-reload-interval", type=float,
                            default=env("EDGEREC_TLS_RELOAD_INTERVAL_S", str(DEFAULT_RELOAD_INTERVAL_S)),
                            help="seconds between checks of the listener's and the client certificate's files for "
                                 "a renewal (EDGEREC_TLS_RELOAD_INTERVAL_S, default 5)")
        parser.add_argument("--production", action="store_const", const="true", default="false",
                            help="production mode (also EDGEREC_ENV=production): refuse weak secrets and a plain "
                                 "HTTP origin beyond loopback")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "EdgeConfig":
        try:
            regions = parse_regions(args.regions)
        except ValueError as exc:
            raise ConfigError(f"--regions/EDGEREC_REGIONS: {exc}") from None
        url = urlparse(args.origin)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise ConfigError(f"--origin/EDGEREC_ORIGIN_URL: {args.origin!r} is not an http(s) URL")
        # During a rotation the variable holds "new,old"; an edge presents the first.
        sync_token, pseudonym_key, cdn_secrets = _edge_secrets()
        if not sync_token:
            raise ConfigError("EDGEREC_SYNC_TOKEN must be set (the token this edge presents to the origin), "
                              "or EDGEREC_SYNC_TOKEN_FILE naming a file that holds it")
        if not 0 < args.port < 65536:
            raise ConfigError(f"--port/EDGEREC_EDGE_PORT: {args.port} is not a TCP port")
        if not args.origin_public_key.strip():
            raise ConfigError("--origin-public-key/EDGEREC_ORIGIN_PUBLIC_KEY must be set: the origin's Ed25519 "
                              "public key, so that the edge applies nothing unsigned")
        try:
            Verifier.from_config(args.origin_public_key)
        except (ValueError, TypeError, OSError) as exc:
            raise ConfigError(f"--origin-public-key/EDGEREC_ORIGIN_PUBLIC_KEY: {exc}") from None
        if args.max_staleness < 0 or not 0 < args.sync_wait <= 300 or not 0 < args.sync_backoff_max <= 600:
            raise ConfigError("--max-staleness >= 0, --sync-wait in (0, 300], --sync-backoff-max in (0, 600]")
        if not 1024 <= args.max_header_bytes <= 1024 * 1024:
            raise ConfigError("--max-header-bytes/EDGEREC_MAX_HEADER_BYTES: from 1024 to 1048576")
        if not 0 < args.header_timeout <= 600:
            raise ConfigError("--header-timeout/EDGEREC_HEADER_TIMEOUT_S: more than 0 and at most 600 seconds")
        if args.max_body_bytes < 1024:
            raise ConfigError("--max-body-bytes/EDGEREC_MAX_BODY_BYTES: at least 1024")
        if not 1 <= args.max_k <= 1000:
            raise ConfigError("--max-k/EDGEREC_MAX_K: between 1 and 1000")
        if not 1 <= args.workers <= 256:
            raise ConfigError("--workers/EDGEREC_WORKERS: between 1 and 256")
        if args.proxy_hops < 1 or args.cache_s_maxage < 1 or args.max_per_group < 0 or args.just_bought_days < 0 \
                or args.model_budget_ms <= 0:
            raise ConfigError("--proxy-hops and --cache-s-maxage must be >= 1, --max-per-group and "
                              "--just-bought-days >= 0, --model-budget-ms > 0")
        if args.events not in ("on", "off"):  # argparse does not check a default taken from the environment
            raise ConfigError(f"--events/EDGEREC_EVENTS: 'on' or 'off', not {args.events!r}")
        if args.events_ack not in ("write", "fsync"):
            raise ConfigError(f"--events-ack/EDGEREC_EVENTS_ACK: 'write' or 'fsync', not {args.events_ack!r}")
        if args.event_spool_max_mb < 1:
            raise ConfigError("--event-spool-max-mb/EDGEREC_EVENT_SPOOL_MAX_MB: at least 1")
        if args.rate_limit_rps < 0 or args.rate_limit_burst < 1:
            raise ConfigError("--rate-limit-rps/EDGEREC_RATE_LIMIT_RPS >= 0 (0 = off), "
                              "--rate-limit-burst/EDGEREC_RATE_LIMIT_BURST >= 1")
        production = production_mode(parse_flag("--production", args.production))
        if production:
            require_strong_secrets("EDGEREC_SYNC_TOKEN", (sync_token,))
            require_strong_secrets("EDGEREC_CDN_SECRET", cdn_secrets, required=False)
            require_strong_secrets("EDGEREC_PSEUDONYM_KEY", (pseudonym_key,) if pseudonym_key else (), required=False)
            require_tls_beyond_loopback("--origin/EDGEREC_ORIGIN_URL", args.origin)
        _check_tls_files(args)
        cdn = CdnPolicy(
            secrets=cdn_secrets,
            geo_headers=tuple(h.strip().lower() for h in args.geo_headers.split(",") if h.strip()),
            untrusted=args.untrusted_cdn_headers,
            markets=parse_markets(args.markets),
            proxy_hops=args.proxy_hops,
            s_maxage=args.cache_s_maxage,
            stale_while_revalidate=2 * args.cache_s_maxage,
        )
        rules = Rules(max_per_group=args.max_per_group, just_bought_days=args.just_bought_days,
                      model_budget_ms=args.model_budget_ms)
        return cls(
            host=args.host,
            port=args.port,
            origin_url=args.origin,
            regions=regions,
            sync_token=sync_token,
            data_dir=Path(args.data_dir),
            max_body_bytes=args.max_body_bytes,
            max_header_bytes=args.max_header_bytes,
            header_timeout_s=args.header_timeout,
            sync_wait_s=args.sync_wait,
            origin_public_key=args.origin_public_key,
            max_staleness_s=args.max_staleness,
            sync_backoff_max_s=args.sync_backoff_max,
            max_k=args.max_k,
            default_k=min(10, args.max_k),
            workers=args.workers,
            event_spool_max_mb=args.event_spool_max_mb,
            events=args.events == "on",
            events_ack=args.events_ack,
            pseudonym_key=pseudonym_key,
            rate_limit_rps=args.rate_limit_rps,
            rate_limit_burst=args.rate_limit_burst,
            cdn=cdn,
            rules=rules,
            origin_ca_file=args.origin_ca,
            client_cert_file=args.client_cert,
            client_key_file=args.client_key,
            tls_cert_file=args.tls_cert,
            tls_key_file=args.tls_key,
            tls_reload_interval_s=args.tls_reload_interval,
            production=production,
        )


def _check_tls_files(args: argparse.Namespace) -> None:
    """Build the TLS contexts once, so that a missing or mismatched file is a clear error at start."""
    if not 0 < args.tls_reload_interval <= 3600:
        raise ConfigError("--tls-reload-interval/EDGEREC_TLS_RELOAD_INTERVAL_S: between 0 and 3600 seconds")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigError("--tls-cert/EDGEREC_EDGE_TLS_CERT_FILE and --tls-key/EDGEREC_EDGE_TLS_KEY_FILE go together")
    if bool(args.client_cert) != bool(args.client_key):
        raise ConfigError("--client-cert/EDGEREC_CLIENT_CERT_FILE and --client-key/EDGEREC_CLIENT_KEY_FILE go together")
    try:
        if args.tls_cert:
            server_context(Path(args.tls_cert), Path(args.tls_key))
        client_context(Path(args.origin_ca) if args.origin_ca else None,
                       Path(args.client_cert) if args.client_cert else None,
                       Path(args.client_key) if args.client_key else None)
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
        cdn=CdnPolicy(**{**cdn, "geo_headers": tuple(cdn["geo_headers"])}, secrets=cdn_secrets),
        rules=Rules(**rules),
    )
