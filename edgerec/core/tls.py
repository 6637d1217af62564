"""TLS on every hop: server contexts whose certificate is reloaded from disk without a restart, client contexts
that verify the origin against a CA bundle, and the edge regions a client certificate names (mutual TLS)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import ssl
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from edgerec.core.settings import SettingError

log = logging.getLogger("edgerec.core.tls")

MIN_TLS_VERSION = ssl.TLSVersion.TLSv1_2
DEFAULT_RELOAD_INTERVAL_S = 5.0
# How a client certificate names the edge region(s) it may sync: subject CN or SAN DNS "edge.gb", or a SAN URI
# "spiffe://edgerec/edge/GB". One certificate may name several regions (an edge serving DE,AT).
_REGION_NAME = re.compile(r"edge\.([a-z]{2})", re.IGNORECASE)
_REGION_URI = re.compile(r"spiffe://edgerec/edge/([a-z]{2})", re.IGNORECASE)

PeerCertificate = dict[str, Any]


def _load_chain(context: ssl.SSLContext, cert_file: Path, key_file: Path, setting: str) -> None:
    try:
        context.load_cert_chain(certfile=str(cert_file), keyfile=str(key_file))
    except FileNotFoundError as exc:
        raise SettingError(f"{setting}: {exc.filename} does not exist") from None
    except (OSError, ssl.SSLError) as exc:
        raise SettingError(
            f"{setting}: {cert_file} and {key_file} are not a usable certificate and private key "
            f"({getattr(exc, 'reason', None) or type(exc).__name__})"
        ) from None


def _load_ca(context: ssl.SSLContext, ca_file: Path, setting: str) -> None:
    try:
        context.load_verify_locations(cafile=str(ca_file))
    except FileNotFoundError:
        raise SettingError(f"{setting}: {ca_file} does not exist") from None
    except (OSError, ssl.SSLError) as exc:
        raise SettingError(
            f"{setting}: {ca_file} is not a PEM CA bundle ({getattr(exc, 'reason', None) or type(exc).__name__})"
        ) from None


def server_context(
    cert_file: Path, key_file: Path, client_ca_file: Path | None = None, require_client_cert: bool = False
) -> ssl.SSLContext:
    """A TLS 1.2+ server context. With a client CA, client certificates are verified against it: required when
    `require_client_cert`, otherwise checked when presented."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MIN_TLS_VERSION
    _load_chain(context, cert_file, key_file, "TLS certificate/key")
    if client_ca_file is not None:
        _load_ca(context, client_ca_file, "client CA")
        context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    elif require_client_cert:
        raise SettingError("requiring client certificates needs a client CA to verify them against")
    return context


def client_context(
    ca_file: Path | None = None, cert_file: Path | None = None, key_file: Path | None = None
) -> ssl.SSLContext:
    """A TLS 1.2+ client context verifying the server's certificate and host name against `ca_file` (the system's
    trust store without one), presenting a client certificate when `cert_file` and `key_file` are given."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = MIN_TLS_VERSION
    if ca_file is not None:
        _load_ca(context, ca_file, "origin CA")
    if (cert_file is None) != (key_file is None):
        raise SettingError("a client certificate needs both its certificate file and its key file")
    if cert_file is not None and key_file is not None:
        _load_chain(context, cert_file, key_file, "client certificate/key")
    return context


def _matching_pair(cert_pem: bytes, key_pem: bytes) -> bool:
    """Whether the first certificate of a PEM chain and a PEM private key belong together (both parse)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        certificate = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        return False
    encoding, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return certificate.public_key().public_bytes(encoding, spki) == key.public_key().public_bytes(encoding, spki)


class CertificateReloader:
    """Watches a certificate and key on disk and serves a renewed pair to new handshakes without a restart.

    A server context is never changed in place: `load_cert_chain` on a live context replaces the certificate and
    then the key, and a connection that starts in between gets a certificate without its key, so its handshake
    fails (seen as an EOF by clients polling during a renewal). With `factory` (the function that made the
    server's context), a renewed pair is loaded into a whole new context, and the live one's SNI callback, which
    OpenSSL calls on every ClientHello, with or without a server name, hands each new connection the newest
    context: the certificate, key, client CA and verify mode change together. A client context (the edge's client
    certificate, no factory) is reloaded in place; it starts few connections. Either way the pair on disk is first
    checked in memory (the certificate's public key against the private key's): a half-replaced pair (one file
    renewed, the other not yet) is not loaded and is tried again at the next check.
    """

    LOAD_ATTEMPTS = 3

    def __init__(
        self,
        context: ssl.SSLContext,
        cert_file: Path,
        key_file: Path,
        interval_s: float = DEFAULT_RELOAD_INTERVAL_S,
        factory: Callable[[], ssl.SSLContext] | None = None,
    ) -> None:
        self.context = context
        self.cert_file, self.key_file = Path(cert_file), Path(key_file)
        self.interval_s = interval_s
        self.factory = factory
        self.reloads = 0
        self.failures = 0
        self._seen = self._fingerprint()
        self._current: ssl.SSLContext | None = None  # the newest server context, once a renewal was loaded

    def _fingerprint(self) -> tuple[tuple[int, int, int], ...] | None:
        try:
            stats = [os.stat(path) for path in (self.cert_file, self.key_file)]
        except OSError:
            return None
        return tuple((s.st_mtime_ns, s.st_size, s.st_ino) for s in stats)

    def _select(self, connection: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        current = self._current
        if current is not None:
            connection.context = current

    def check(self) -> bool:
        """Reload when either file changed since the last successful load; True when a new pair was loaded."""
        current = self._fingerprint()
        if current is None or current == self._seen:
            return False
        problem = "unreadable"
        for _ in range(self.LOAD_ATTEMPTS):
            try:
                matching = _matching_pair(self.cert_file.read_bytes(), self.key_file.read_bytes())
            except OSError as exc:
                problem = exc.strerror or type(exc).__name__
                break
            if not matching:
                problem = "the certificate and key on disk do not belong together (yet)"
                break
            try:
                if self.factory is not None:
                    fresh = self.factory()
                    self._current = fresh
                    if self.context.sni_callback is None:
                        self.context.sni_callback = self._select
                else:
                    self.context.load_cert_chain(certfile=str(self.cert_file), keyfile=str(self.key_file))
            except (OSError, ssl.SSLError, SettingError) as exc:  # the files changed since the check: again
                problem = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
                current = self._fingerprint()
                continue
            self._seen = current
            self.reloads += 1
            log.info("reloaded the TLS certificate %s; new connections get it", self.cert_file)
            return True
        self.failures += 1
        log.error(
            "could not reload the TLS certificate %s (%s); still serving the previous one, retrying",
            self.cert_file,
            problem,
        )
        return False

    async def run(self) -> None:
        """Check every `interval_s` until cancelled."""
        while True:
            await asyncio.sleep(self.interval_s)
            await asyncio.to_thread(self.check)

    async def running(self, *_: object) -> AsyncIterator[None]:
        """Runs the watcher for the lifetime of an aiohttp app (`app.cleanup_ctx.append(reloader.running)`)."""
        task = asyncio.create_task(self.run(), name="edgerec-tls-reload")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def peer_certificate(transport: asyncio.BaseTransport | None) -> PeerCertificate | None:
    """The verified client certificate of a TLS connection (as `SSLSocket.getpeercert()` decodes it), or None."""
    if transport is None:
        return None
    certificate = transport.get_extra_info("peercert")
    if not certificate:
        ssl_object = transport.get_extra_info("ssl_object")
        certificate = ssl_object.getpeercert() if ssl_object is not None else None
    return certificate or None


def regions_in_certificate(certificate: PeerCertificate) -> frozenset[str]:
    """The edge regions a certificate names: subject CN or SAN DNS `edge.<region>`, SAN URI
    `spiffe://edgerec/edge/<REGION>`. Anything else (an operator's certificate) names none."""
    names: list[str] = []
    for rdn in certificate.get("subject", ()):
        names.extend(value for key, value in rdn if key == "commonName")
    regions = {m.group(1).upper() for name in names if (m := _REGION_NAME.fullmatch(name))}
    for kind, value in certificate.get("subjectAltName", ()):
        pattern = _REGION_NAME if kind == "DNS" else _REGION_URI if kind == "URI" else None
        if pattern is not None and (m := pattern.fullmatch(value)):
            regions.add(m.group(1).upper())
    return frozenset(regions)
