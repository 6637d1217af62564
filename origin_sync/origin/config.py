"""Origin configuration: one typed place, read from flags and environment, validated at start."""

from __future__ import annotations

import argparse
import json
import os
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from edgerec.core.settings import (
    MIN_SECRET_CHARS,
    SettingError,
    parse_flag,
    production_mode,
    require_strong_secrets,
    secret_from_env,
    secret_values_from_env,
)
from edgerec.core.tls import DEFAULT_RELOAD_INTERVAL_S, server_context
from origin_sync.origin.credentials import (
    AdminCredential,
    CredentialError,
    Credentials,
    parse_admin_credentials,
)
from origin_sync.wire.fields import is_region_code
from origin_sync.wire.signing import Signer, load_private_key


class ConfigError(SettingError):
    """A setting is missing or invalid; the message names the flag and the variable."""


_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _check_secrets(variable: str, values: tuple[str, ...]) -> tuple[str, ...]:
    if any(len(v) < MIN_SECRET_CHARS for v in values):
        raise ConfigError(f"{variable}: every value must be a secret of at least {MIN_SECRET_CHARS} characters")
    return values


def secret_list(variable: str, required: bool = True) -> tuple[str, ...]:
    """Read a secret that may hold several accepted values ("new,old" during a rotation); the first is current.
    It comes from the variable or from the file `<variable>_FILE` names."""
    values = secret_values_from_env(variable)
    if not values and required:
        raise ConfigError(f"{variable} must be set (or {variable}_FILE)")
    return _check_secrets(variable, values)


def parse_region_tokens(raw: str, variable: str = "EDGEREC_REGION_TOKENS") -> dict[str, tuple[str, ...]]:
    """Per-region sync tokens: "GB=tok1|tok1old,DE=tok2", or a JSON object {"GB": ["tok1", ...]} inline or in a file.

    The values never appear in an error message.
    """
    raw = raw.strip()
    if not raw:
        return {}
    if not raw.startswith("{") and Path(raw).is_file():
        raw = Path(raw).read_text().strip()
    if raw.startswith("{"):
        try:
            loaded = json.loads(raw)
        except ValueError:
            raise ConfigError(f"{variable}: not valid JSON") from None
        pairs = [(r, [v] if isinstance(v, str) else v) for r, v in loaded.items()]
    else:
        pairs = []
        for item in filter(None, (p.strip() for p in raw.split(","))):
            region, sep, values = item.partition("=")
            if not sep:
                raise ConfigError(f"{variable}: expected REGION=token|token,... (an item has no '=')")
            pairs.append((region.strip(), [v.strip() for v in values.split("|") if v.strip()]))
    tokens: dict[str, tuple[str, ...]] = {}
    for region, values in pairs:
        region = str(region).upper()
        if not is_region_code(region):
            raise ConfigError(f"{variable}: {region!r} is not a two-letter market code")
        if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
            raise ConfigError(f"{variable}: region {region} needs at least one token")
        tokens[region] = tokens.get(region, ()) + _check_secrets(variable, tuple(values))
    return tokens


def parse_retention(raw: str) -> tuple[int | None, float | None]:
    """"100000" keeps that many versions; "7d", "12h", "30m", "600s" keep that much time; "0"/"" keeps everything."""
    raw = raw.strip().lower()
    if raw in ("", "0", "none", "forever"):
        return None, None
    if raw.isdigit():
        return int(raw), None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", raw)
    if not match:
        raise ConfigError(f"--log-retention/EDGEREC_LOG_RETENTION: {raw!r} is neither a number of versions "
                          "nor an age such as 7d, 12h, 30m")
    return None, float(match.group(1)) * _AGE_UNITS[match.group(2)]


TOKEN_VARIABLES = ("EDGEREC_ADMIN_TOKEN", "EDGEREC_ADMIN_TOKENS", "EDGEREC_SYNC_TOKEN", "EDGEREC_REGION_TOKENS")


def read_token_settings() -> tuple[tuple[str, ...], tuple[AdminCredential, ...], tuple[str, ...],
                                   dict[str, tuple[str, ...]]]:
    """The token settings as configured: EDGEREC_ADMIN_TOKEN (every scope), EDGEREC_ADMIN_TOKENS (named, scoped),
    EDGEREC_SYNC_TOKEN (every region) and EDGEREC_REGION_TOKENS. Any entry may be `sha256:<hex>` instead of a token."""
    try:
        named_admin = parse_admin_credentials(secret_from_env("EDGEREC_ADMIN_TOKENS"))
    except CredentialError as exc:
        raise ConfigError(str(exc)) from None
    return (secret_list("EDGEREC_ADMIN_TOKEN", required=False), named_admin,
            secret_list("EDGEREC_SYNC_TOKEN", required=False),
            parse_region_tokens(secret_from_env("EDGEREC_REGION_TOKENS")))


def credential_files() -> tuple[Path, ...]:
    """The files the token settings are read from (a JSON file named by the variable, or `<variable>_FILE`)."""
    files = []
    for variable in TOKEN_VARIABLES:
        for value in (os.environ.get(variable, "").strip(), os.environ.get(f"{variable}_FILE", "").strip()):
            if value and not value.startswith(("{", "sha256:")) and "," not in value and Path(value).is_file():
                files.append(Path(value))
    return tuple(files)


def hash_credentials(admin_tokens: tuple[str, ...], named_admin: tuple[AdminCredential, ...],
                     sync_tokens: tuple[str, ...], region_tokens: Mapping[str, tuple[str, ...]]) -> Credentials:
    try:
        return Credentials.build(admin_tokens, named_admin, sync_tokens, region_tokens, credential_files())
    except CredentialError as exc:
        raise ConfigError(str(exc)) from None


def load_credentials() -> Credentials:
    """Read, check and hash the token settings again: what the origin does on SIGHUP or when one of their files
    changes, so that a rotation needs no restart. ConfigError leaves the caller on the credentials it has."""
    return hash_credentials(*read_token_settings())


@dataclass(frozen=True)
class OriginConfig:
    host: str
    port: int
    db_path: Path
    blob_dir: Path
    credentials: Credentials  # digests only; reloaded at run time from the same settings (see load_credentials)
    signer: Signer | None = None
    signers: tuple[Signer, ...] = ()  # every private key held (EDGEREC_SIGNING_KEY); () = just `signer`
    dsn: str | None = None
    max_wait_s: float = 30.0
    retention_versions: int | None = None
    retention_seconds: float | None = 7 * 86400.0
    compact_interval_s: float = 60.0
    event_sinks: tuple[str, ...] = ("sql",)
    events_db: Path = Path("var/origin/events.db")
    nats_url: str = "nats://127.0.0.1:4222"
    event_retention_s: float | None = 90 * 86400.0
    admin_rate_limit_rps: float = 10.0   # per admin credential (per peer address without one); 0 = no limit
    admin_rate_limit_burst: int = 50
    sync_rate_limit_rps: float = 100.0   # per sync token, shared by every edge worker presenting it; 0 = no limit
    sync_rate_limit_burst: int = 500
    audit_retention_s: float | None = 365 * 86400.0
    tls: OriginTls | None = None    # HTTPS listener; None = plain HTTP (loopback/dev, or behind a TLS proxy)
    behind_tls_proxy: bool = False  # declared: a proxy in front terminates TLS (lets production serve plain HTTP)
    production: bool = False

    def __repr__(self) -> str:  # no secret in a log line or a traceback
        return (f"OriginConfig(host={self.host!r}, port={self.port}, db={'postgresql' if self.dsn else self.db_path}, "
                f"regions_with_tokens={sorted(self.credentials.region_tokens)}, "
                f"key_id={self.signer and self.signer.key_id})")

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        env = os.environ.get
        parser.add_argument("--host", default=env("EDGEREC_ORIGIN_HOST", "127.0.0.1"),
                            help="listen address (EDGEREC_ORIGIN_HOST, default 127.0.0.1)")
        parser.add_argument("--port", type=int, default=int(env("EDGEREC_ORIGIN_PORT", "8080")),
                            help="listen port (EDGEREC_ORIGIN_PORT, default 8080)")
        parser.add_argument("--db", default=env("EDGEREC_ORIGIN_DB", "var/origin/origin.db"),
                            help="SQLite database path (EDGEREC_ORIGIN_DB), used when no DSN is given")
        parser.add_argument("--dsn", default=env("EDGEREC_ORIGIN_DSN", ""),
                            help="PostgreSQL DSN, e.g. postgresql://user@host:5432/db (EDGEREC_ORIGIN_DSN); "
                                 "the password comes from PGPASSWORD, never from the DSN")
        parser.add_argument("--blob-dir", default=env("EDGEREC_BLOB_DIR", "var/origin/blobs"),
                            help="directory of content-addressed model blobs (EDGEREC_BLOB_DIR)")
        parser.add_argument("--max-wait", type=float, default=float(env("EDGEREC_MAX_WAIT_S", "30")),
                            help="longest long-poll in seconds (EDGEREC_MAX_WAIT_S, default 30)")
        parser.add_argument("--log-retention", default=env("EDGEREC_LOG_RETENTION", "7d"),
                            help="how much change log to keep: versions (100000) or age (7d, 12h) "
                                 "(EDGEREC_LOG_RETENTION, default 7d)")
        parser.add_argument("--compact-interval", type=float,
                            default=float(env("EDGEREC_COMPACT_INTERVAL_S", "60")),
                            help="seconds between compactions (EDGEREC_COMPACT_INTERVAL_S, default 60)")

        parser.add_argument("--event-sink", default=env("EDGEREC_EVENT_SINK", "sql"),
                            help="where shipped events go: sql (the SQLite events file, or PostgreSQL with --dsn), "
                                 "nats (JetStream), or both: sql,nats (EDGEREC_EVENT_SINK, default sql)")
        parser.add_argument("--events-db", default=env("EDGEREC_EVENTS_DB", ""),
                            help="SQLite file of events when no DSN is given (EDGEREC_EVENTS_DB, default: events.db "
                                 "beside the --db file)")
        parser.add_argument("--nats-url", default=env("EDGEREC_NATS_URL", "nats://127.0.0.1:4222"),
                            help="NATS server of the nats event sink (EDGEREC_NATS_URL)")
        parser.add_argument("--event-retention", default=env("EDGEREC_EVENT_RETENTION", "90d"),
                            help="how long raw events are kept: an age such as 90d or 12h; 0 keeps them "
                                 "(EDGEREC_EVENT_RETENTION, default 90d)")

        parser.add_argument("--admin-rate-limit-rps", type=float,
                            default=float(env("EDGEREC_ADMIN_RATE_LIMIT_RPS", "10")),
                            help="admin calls a second per admin credential (per peer address for calls without "
                                 "a valid one), past which 429; 0 = no limit (EDGEREC_ADMIN_RATE_LIMIT_RPS, default 10)")
        parser.add_argument("--admin-rate-limit-burst", type=int,
                            default=int(env("EDGEREC_ADMIN_RATE_LIMIT_BURST", "50")),
                            help="admin calls at once above the rate (EDGEREC_ADMIN_RATE_LIMIT_BURST, default 50)")
        parser.add_argument("--sync-rate-limit-rps", type=float,
                            default=float(env("EDGEREC_SYNC_RATE_LIMIT_RPS", "100")),
                            help="sync calls a second per sync token, all edges presenting it together (per peer "
                                 "address for calls without a valid one); 0 = no limit "
                                 "(EDGEREC_SYNC_RATE_LIMIT_RPS, default 100)")
        parser.add_argument("--sync-rate-limit-burst", type=int,
                            default=int(env("EDGEREC_SYNC_RATE_LIMIT_BURST", "500")),
                            help="sync calls at once above the rate (EDGEREC_SYNC_RATE_LIMIT_BURST, default 500)")
        parser.add_argument("--audit-retention", default=env("EDGEREC_AUDIT_RETENTION", "365d"),
                            help="how long audit entries of admin calls are kept in the store: an age such as "
                                 "365d; 0 keeps them (EDGEREC_AUDIT_RETENTION, default 365d)")
        add_tls_arguments(parser)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "OriginConfig":
        # Secrets come only from the environment so that they never show in a process list.
        # Plaintext tokens live in these locals only: the config keeps their digests.
        admin_tokens, named_admin, sync_tokens, region_tokens = read_token_settings()
        credentials = hash_credentials(admin_tokens, named_admin, sync_tokens, region_tokens)
        signing_key = os.environ.get("EDGEREC_SIGNING_KEY", "").strip()
        if not signing_key:
            raise ConfigError("EDGEREC_SIGNING_KEY must be set: the origin's Ed25519 private key "
                              "(a PEM file path or the PEM text); `edgerec origin keygen --out DIR` makes one")
        try:
            # Several keys (comma-separated) during a key rotation; the first signs until a key set is published.
            signers = tuple(Signer(load_private_key(part)) for part in signing_key.split(",") if part.strip())
            signer = signers[0]
        except (ValueError, TypeError, OSError, IndexError) as exc:
            raise ConfigError(f"EDGEREC_SIGNING_KEY: not a usable Ed25519 private key ({type(exc).__name__})") from None
        if not 0 < args.port < 65536:
            raise ConfigError(f"--port/EDGEREC_ORIGIN_PORT: {args.port} is not a TCP port")
        if not 0 < args.max_wait <= 300:
            raise ConfigError("--max-wait/EDGEREC_MAX_WAIT_S: between 0 and 300 seconds")
        if args.dsn and not args.dsn.startswith(("postgresql://", "postgres://")):
            raise ConfigError("--dsn/EDGEREC_ORIGIN_DSN: expected a postgresql:// URL")
        if args.compact_interval <= 0:
            raise ConfigError("--compact-interval/EDGEREC_COMPACT_INTERVAL_S: must be positive")
        retention_versions, retention_seconds = parse_retention(args.log_retention)
        sinks = tuple(sorted({p.strip().lower() for p in args.event_sink.split(",") if p.strip()}))
        if not sinks or not set(sinks) <= {"sql", "nats"}:
            raise ConfigError("--event-sink/EDGEREC_EVENT_SINK: sql, nats, or sql,nats")
        if not args.nats_url.startswith(("nats://", "tls://")):
            raise ConfigError("--nats-url/EDGEREC_NATS_URL: a nats:// or tls:// URL")
        event_versions, event_retention_s = parse_retention(args.event_retention)
        if event_versions is not None:
            raise ConfigError("--event-retention/EDGEREC_EVENT_RETENTION: an age such as 90d, 12h; or 0")
        if args.admin_rate_limit_rps < 0 or args.sync_rate_limit_rps < 0 or args.admin_rate_limit_burst < 1 \
                or args.sync_rate_limit_burst < 1:
            raise ConfigError("--admin-rate-limit-rps/--sync-rate-limit-rps >= 0 (0 = off), "
                              "--admin-rate-limit-burst/--sync-rate-limit-burst >= 1")
        audit_versions, audit_retention_s = parse_retention(args.audit_retention)
        if audit_versions is not None:
            raise ConfigError("--audit-retention/EDGEREC_AUDIT_RETENTION: an age such as 365d; or 0")
        tls = tls_from_args(args)
        production = production_mode(parse_flag("--production", args.production))
        behind_tls_proxy = parse_flag("--behind-tls-proxy/EDGEREC_ORIGIN_BEHIND_TLS_PROXY", args.behind_tls_proxy)
        if production:
            refuse_weak_origin_secrets(admin_tokens, sync_tokens, region_tokens)
            if tls is None and not behind_tls_proxy:
                raise ConfigError("production: the origin serves HTTPS only: set --tls-cert/EDGEREC_ORIGIN_TLS_CERT_FILE "
                                  "and --tls-key/EDGEREC_ORIGIN_TLS_KEY_FILE, or declare the TLS-terminating proxy "
                                  "in front of it with --behind-tls-proxy/EDGEREC_ORIGIN_BEHIND_TLS_PROXY=true")
        return cls(
            host=args.host,
            port=args.port,
            db_path=Path(args.db),
            blob_dir=Path(args.blob_dir),
            credentials=credentials,
            signer=signer,
            signers=signers,
            dsn=args.dsn or None,
            max_wait_s=args.max_wait,
            retention_versions=retention_versions,
            retention_seconds=retention_seconds,
            compact_interval_s=args.compact_interval,
            event_sinks=sinks,
            events_db=Path(args.events_db) if args.events_db else Path(args.db).parent / "events.db",
            nats_url=args.nats_url,
            event_retention_s=event_retention_s,
            admin_rate_limit_rps=args.admin_rate_limit_rps,
            admin_rate_limit_burst=args.admin_rate_limit_burst,
            sync_rate_limit_rps=args.sync_rate_limit_rps,
            sync_rate_limit_burst=args.sync_rate_limit_burst,
            audit_retention_s=audit_retention_s,
            tls=tls,
            behind_tls_proxy=behind_tls_proxy,
            production=production,
        )


@dataclass(frozen=True)
class OriginTls:
    """The origin's HTTPS listener: certificate and key files (reloaded when they change) and, for mutual TLS, the
    CA that edges' client certificates must chain to."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None
    require_client_cert: bool = False   # without a certificate the handshake fails; else checked when presented
    reload_interval_s: float = DEFAULT_RELOAD_INTERVAL_S

    def context(self) -> ssl.SSLContext:
        return server_context(self.cert_file, self.key_file, self.client_ca_file, self.require_client_cert)


def add_tls_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of the origin's TLS and production mode; they hold paths and switches, never a secret."""
    env = os.environ.get
    parser.add_argument("--tls-cert", default=env("EDGEREC_ORIGIN_TLS_CERT_FILE", ""),
                        help="PEM certificate chain of the HTTPS listener, reloaded when the file changes "
                             "(EDGEREC_ORIGIN_TLS_CERT_FILE; unset = plain HTTP)")
    parser.add_argument("--tls-key", default=env("EDGEREC_ORIGIN_TLS_KEY_FILE", ""),
                        help="PEM private key of that certificate (EDGEREC_ORIGIN_TLS_KEY_FILE)")
    parser.add_argument("--client-ca", default=env("EDGEREC_ORIGIN_CLIENT_CA_FILE", ""),
                        help="CA bundle edges' client certificates must chain to (mutual TLS); a presented "
                             "certificate must name the regions of the token (EDGEREC_ORIGIN_CLIENT_CA_FILE)")
    parser.add_argument("--require-client-cert", action="store_const", const="true",
                        default=env("EDGEREC_ORIGIN_REQUIRE_CLIENT_CERT", "false"),
                        help="refuse TLS connections without a client certificate from --client-ca "
                             "(EDGEREC_ORIGIN_REQUIRE_CLIENT_CERT)")
    parser.add_argument("--tls-reload-interval", type=float,
                        default=env("EDGEREC_TLS_RELOAD_INTERVAL_S", str(DEFAULT_RELOAD_INTERVAL_S)),
                        help="seconds between checks of the certificate files for a renewal "
                             "(EDGEREC_TLS_RELOAD_INTERVAL_S, default 5)")
    parser.add_argument("--behind-tls-proxy", action="store_const", const="true",
                        default=env("EDGEREC_ORIGIN_BEHIND_TLS_PROXY", "false"),
                        help="a proxy in front of the origin terminates TLS (lets production mode serve plain "
                             "HTTP to it) (EDGEREC_ORIGIN_BEHIND_TLS_PROXY)")
    parser.add_argument("--production", action="store_const", const="true", default="false",
                        help="production mode (also EDGEREC_ENV=production): refuse weak or missing secrets and "
                             "plain HTTP")


def tls_from_args(args: argparse.Namespace) -> OriginTls | None:
    """The HTTPS settings, checked by building the server context once (a bad file is a clear error at start)."""
    require = parse_flag("--require-client-cert/EDGEREC_ORIGIN_REQUIRE_CLIENT_CERT", args.require_client_cert)
    if not args.tls_cert and not args.tls_key:
        if args.client_ca or require:
            raise ConfigError("--client-ca and --require-client-cert need the origin to serve TLS: set --tls-cert/"
                              "EDGEREC_ORIGIN_TLS_CERT_FILE and --tls-key/EDGEREC_ORIGIN_TLS_KEY_FILE")
        return None
    if not args.tls_cert or not args.tls_key:
        raise ConfigError("--tls-cert/EDGEREC_ORIGIN_TLS_CERT_FILE and --tls-key/EDGEREC_ORIGIN_TLS_KEY_FILE "
                          "go together")
    if not 0 < args.tls_reload_interval <= 3600:
        raise ConfigError("--tls-reload-interval/EDGEREC_TLS_RELOAD_INTERVAL_S: between 0 and 3600 seconds")
    tls = OriginTls(cert_file=Path(args.tls_cert), key_file=Path(args.tls_key),
                    client_ca_file=Path(args.client_ca) if args.client_ca else None,
                    require_client_cert=require, reload_interval_s=args.tls_reload_interval)
    try:
        tls.context()
    except SettingError as exc:
        raise ConfigError(f"--tls-cert/--tls-key/--client-ca: {exc}") from None
    return tls


def refuse_weak_origin_secrets(admin_tokens: tuple[str, ...], sync_tokens: tuple[str, ...],
                               region_tokens: Mapping[str, tuple[str, ...]]) -> None:
    """Production mode: every plaintext secret the origin holds must be strong; the error names the variable.
    (Whether any admin credential is set at all is checked where the token settings are read.)"""
    require_strong_secrets("EDGEREC_ADMIN_TOKEN", admin_tokens, required=False)
    require_strong_secrets("EDGEREC_SYNC_TOKEN", sync_tokens, required=False)
    for region, tokens in sorted(region_tokens.items()):
        require_strong_secrets(f"EDGEREC_REGION_TOKENS (region {region})", tokens)
    password = os.environ.get("PGPASSWORD", "")  # libpq reads it itself, so it has no _FILE form here
    require_strong_secrets("PGPASSWORD", (password,) if password else (), required=False)
