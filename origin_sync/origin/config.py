"""The origin's configuration as it runs: its settings (settings.py: flags, environment, settings file) with the
secrets (tokens.py, the signing keys) and the TLS listener resolved, checked together at start."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from edgerec.core.service import ServiceConfig
from edgerec.core.settings import ConfigError, SettingError, production_mode
from edgerec.core.tls import DEFAULT_RELOAD_INTERVAL_S, server_context
from origin_sync.origin.credentials import Credentials
from origin_sync.origin.settings import OriginSettings, parse_event_sinks, parse_retention
from origin_sync.origin.tokens import hash_credentials, read_token_settings, refuse_weak_origin_secrets
from origin_sync.wire.signing import Signer, load_private_key


@dataclass(frozen=True)
class OriginConfig(ServiceConfig):
    settings_class = OriginSettings

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
    admin_rate_limit_rps: float = 10.0  # per admin credential (per peer address without one); 0 = no limit
    admin_rate_limit_burst: int = 50
    sync_rate_limit_rps: float = 100.0  # per sync token, shared by every edge worker presenting it; 0 = no limit
    sync_rate_limit_burst: int = 500
    audit_retention_s: float | None = 365 * 86400.0
    tls: OriginTls | None = None  # HTTPS listener; None = plain HTTP (loopback/dev, or behind a TLS proxy)
    behind_tls_proxy: bool = False  # declared: a proxy in front terminates TLS (lets production serve plain HTTP)
    sequential_tuning_n: int = 5000  # units per variant at which the reports' mSPRT is most powerful

    def __repr__(self) -> str:  # no secret in a log line or a traceback
        return (
            f"OriginConfig(host={self.host!r}, port={self.port}, db={'postgresql' if self.dsn else self.db_path}, "
            f"regions_with_tokens={sorted(self.credentials.region_tokens)}, "
            f"key_id={self.signer and self.signer.key_id})"
        )

    @classmethod
    def from_settings(cls, settings: OriginSettings) -> "OriginConfig":
        # Secrets come only from the environment so that they never show in a process list.
        # Plaintext tokens live in these locals only: the config keeps their digests.
        admin_tokens, named_admin, sync_tokens, region_tokens = read_token_settings()
        credentials = hash_credentials(admin_tokens, named_admin, sync_tokens, region_tokens)
        signers = _signers()
        tls = _tls(settings)
        production = production_mode(settings.production)
        if production:
            refuse_weak_origin_secrets(admin_tokens, sync_tokens, region_tokens)
            if tls is None and not settings.behind_tls_proxy:
                raise ConfigError(
                    "production: the origin serves HTTPS only: set "
                    "--tls-cert/EDGEREC_ORIGIN_TLS_CERT_FILE "
                    "and --tls-key/EDGEREC_ORIGIN_TLS_KEY_FILE, or declare the TLS-terminating proxy "
                    "in front of it with --behind-tls-proxy/EDGEREC_ORIGIN_BEHIND_TLS_PROXY=true"
                )
        retention_versions, retention_seconds = parse_retention(settings.log_retention)
        settings.check_tracing_installed()
        return cls(
            **cls.common_fields(settings, production),
            db_path=Path(settings.db),
            blob_dir=Path(settings.blob_dir),
            credentials=credentials,
            signer=signers[0],
            signers=signers,
            dsn=settings.dsn or None,
            max_wait_s=settings.max_wait,
            retention_versions=retention_versions,
            retention_seconds=retention_seconds,
            compact_interval_s=settings.compact_interval,
            event_sinks=parse_event_sinks(settings.event_sink),
            events_db=Path(settings.events_db) if settings.events_db else Path(settings.db).parent / "events.db",
            nats_url=settings.nats_url,
            event_retention_s=parse_retention(settings.event_retention)[1],
            admin_rate_limit_rps=settings.admin_rate_limit_rps,
            admin_rate_limit_burst=settings.admin_rate_limit_burst,
            sync_rate_limit_rps=settings.sync_rate_limit_rps,
            sync_rate_limit_burst=settings.sync_rate_limit_burst,
            audit_retention_s=parse_retention(settings.audit_retention)[1],
            tls=tls,
            behind_tls_proxy=settings.behind_tls_proxy,
            sequential_tuning_n=settings.sequential_tuning_n,
        )


def _signers() -> tuple[Signer, ...]:
    signing_key = os.environ.get("EDGEREC_SIGNING_KEY", "").strip()
    if not signing_key:
        raise ConfigError(
            "EDGEREC_SIGNING_KEY must be set: the origin's Ed25519 private key "
            "(a PEM file path or the PEM text); `edgerec origin keygen --out DIR` makes one"
        )
    try:
        # Several keys (comma-separated) during a key rotation; the first signs until a key set is published.
        signers = tuple(Signer(load_private_key(part)) for part in signing_key.split(",") if part.strip())
    except (ValueError, TypeError, OSError) as exc:
        raise ConfigError(f"EDGEREC_SIGNING_KEY: not a usable Ed25519 private key ({type(exc).__name__})") from None
    if not signers:
        raise ConfigError("EDGEREC_SIGNING_KEY: not a usable Ed25519 private key (no key in it)")
    return signers


@dataclass(frozen=True)
class OriginTls:
    """The origin's HTTPS listener: certificate and key files (reloaded when they change) and, for mutual TLS, the
    CA that edges' client certificates must chain to."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None
    require_client_cert: bool = False  # without a certificate the handshake fails; else checked when presented
    reload_interval_s: float = DEFAULT_RELOAD_INTERVAL_S

    def context(self) -> ssl.SSLContext:
        return server_context(self.cert_file, self.key_file, self.client_ca_file, self.require_client_cert)


def _tls(settings: OriginSettings) -> OriginTls | None:
    """The HTTPS settings, checked by building the server context once (a bad file is a clear error at start)."""
    if not settings.tls_cert and not settings.tls_key:
        if settings.client_ca or settings.require_client_cert:
            raise ConfigError(
                "--client-ca and --require-client-cert need the origin to serve TLS: set --tls-cert/"
                "EDGEREC_ORIGIN_TLS_CERT_FILE and --tls-key/EDGEREC_ORIGIN_TLS_KEY_FILE"
            )
        return None
    if not settings.tls_cert or not settings.tls_key:
        raise ConfigError(
            "--tls-cert/EDGEREC_ORIGIN_TLS_CERT_FILE and --tls-key/EDGEREC_ORIGIN_TLS_KEY_FILE go together"
        )
    tls = OriginTls(
        cert_file=Path(settings.tls_cert),
        key_file=Path(settings.tls_key),
        client_ca_file=Path(settings.client_ca) if settings.client_ca else None,
        require_client_cert=settings.require_client_cert,
        reload_interval_s=settings.tls_reload_interval,
    )
    try:
        tls.context()
    except SettingError as exc:
        raise ConfigError(f"--tls-cert/--tls-key/--client-ca: {exc}") from None
    return tls
