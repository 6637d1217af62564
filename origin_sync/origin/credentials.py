"""The credentials the origin accepts, held only as sha256 digests: admin credentials with scopes, and edge sync
tokens per region. A presented token is hashed once and compared with every digest in constant time."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from edgerec.core.settings import SettingError, production_mode, require_strong_secrets

# What an admin credential may do. A GET of an admin endpoint needs `read` or the endpoint's own scope.
SCOPE_CATALOG = "catalog"  # offers
SCOPE_MODELS = "models"  # publish and activate model bundles
SCOPE_EXPERIMENTS = "experiments"  # experiments and their reports
SCOPE_EVENTS = "events"  # erasure of a shopper's events
SCOPE_KEYS = "keys"  # signing key rotation
SCOPE_OPS = "ops"  # compaction of the change log
SCOPE_READ = "read"  # every GET under /v1/admin/ (status, audit log included)
ADMIN_SCOPES = frozenset(
    {SCOPE_CATALOG, SCOPE_MODELS, SCOPE_EXPERIMENTS, SCOPE_EVENTS, SCOPE_KEYS, SCOPE_OPS, SCOPE_READ}
)
ALL_SCOPES = "*"
HASH_PREFIX = "sha256:"
MIN_TOKEN_CHARS = 16
FLEET = "*"  # the regions a fleet-wide sync token may sync

_HEX_DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class CredentialError(ValueError):
    """A credential setting is invalid; the message names the variable, never a token."""


def token_digest(variable: str, value: str) -> bytes:
    """The sha256 of a token, or the digest given as `sha256:<64 hex>` (so the origin need not see the token)."""
    value = value.strip()
    if value.lower().startswith(HASH_PREFIX):
        hex_digest = value[len(HASH_PREFIX) :].strip().lower()
        if not _HEX_DIGEST_RE.match(hex_digest):
            raise CredentialError(
                f'{variable}: a {HASH_PREFIX} entry needs 64 hex digits (printf %s "$TOKEN" | sha256sum)'
            )
        return bytes.fromhex(hex_digest)
    if len(value) < MIN_TOKEN_CHARS:
        raise CredentialError(f"{variable}: every token must be at least {MIN_TOKEN_CHARS} characters")
    return hashlib.sha256(value.encode()).digest()


def presented_digest(token: bytes | None) -> bytes | None:
    return None if token is None else hashlib.sha256(token).digest()


def _equals_any(digest: bytes, accepted: tuple[bytes, ...]) -> bool:
    """Compares with every accepted digest (no early exit), each in constant time."""
    found = False
    for candidate in accepted:
        found |= hmac.compare_digest(digest, candidate)
    return found


@dataclass(frozen=True)
class AdminCredential:
    """One admin credential: the digests of its tokens (two during a rotation), its scopes and optional name."""

    digests: tuple[bytes, ...]
    scopes: frozenset[str]
    name: str | None = None

    def allows(self, scope: str | None, method: str) -> bool:
        if ALL_SCOPES in self.scopes or scope is None:
            return True
        return scope in self.scopes or (method in ("GET", "HEAD") and SCOPE_READ in self.scopes)

    def actor(self, digest: bytes) -> str:
        """The audit log's `actor`: `admin:` [name `:`] first 8 hex digits of the token's sha256."""
        return f"admin:{self.name + ':' if self.name else ''}{digest.hex()[:8]}"


def _listed(entry: Mapping[str, Any], key: str) -> list[str]:
    value = entry.get(key, [])
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise CredentialError(f"EDGEREC_ADMIN_TOKENS: `{key}` is a string or a list of strings")
    return values


def parse_admin_credentials(raw: str) -> tuple[AdminCredential, ...]:
    """EDGEREC_ADMIN_TOKENS: a JSON object, inline or in a file, of named, scoped credentials:
    {"ci-catalog": {"token": "..." | ["new", "old"], "sha256": "<hex>" | [...], "scopes": ["catalog", "read"]}}."""
    variable = "EDGEREC_ADMIN_TOKENS"
    raw = raw.strip()
    if not raw:
        return ()
    if not raw.startswith("{"):
        try:
            raw = Path(raw).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            raise CredentialError(f"{variable}: neither a JSON object nor a readable file") from None
    try:
        loaded = json.loads(raw)
    except ValueError:
        raise CredentialError(f"{variable}: not valid JSON") from None
    if not isinstance(loaded, dict):
        raise CredentialError(f"{variable}: a JSON object of name -> {{token|sha256, scopes}}")
    credentials = []
    for name, entry in sorted(loaded.items()):
        if not _NAME_RE.match(name) or not isinstance(entry, dict) or set(entry) - {"token", "sha256", "scopes"}:
            raise CredentialError(
                f"{variable}: {name[:64]!r}: a name of 1-64 letters, digits, '.', '_', '-' mapped "
                "to {token and/or sha256, scopes}"
            )
        if production_mode():  # a plaintext token here is held to the same bar as EDGEREC_ADMIN_TOKEN
            try:
                require_strong_secrets(f"{variable} ({name})", tuple(_listed(entry, "token")), required=False)
            except SettingError as exc:
                raise CredentialError(str(exc)) from None
        digests = tuple(token_digest(f"{variable} ({name})", t) for t in _listed(entry, "token")) + tuple(
            token_digest(f"{variable} ({name})", HASH_PREFIX + h) for h in _listed(entry, "sha256")
        )
        scopes = frozenset(_listed(entry, "scopes"))
        if not digests or not scopes or not scopes <= ADMIN_SCOPES | {ALL_SCOPES}:
            raise CredentialError(
                f"{variable} ({name}): needs a token or sha256, and scopes from "
                f'{", ".join(sorted(ADMIN_SCOPES))} or "*"'
            )
        credentials.append(AdminCredential(digests, scopes, name))
    return tuple(credentials)


@dataclass(frozen=True)
class Credentials:
    """Every credential the origin accepts, as digests; the plaintext tokens are dropped once hashed."""

    admin: tuple[AdminCredential, ...]
    sync_tokens: tuple[bytes, ...]  # fleet-wide (EDGEREC_SYNC_TOKEN)
    region_tokens: Mapping[str, tuple[bytes, ...]] = field(default_factory=dict)
    sources: tuple[Path, ...] = ()  # the files they were read from, watched for changes

    def __repr__(self) -> str:  # never a digest either: they identify the tokens
        return (
            f"Credentials(admin={len(self.admin)}, sync_tokens={len(self.sync_tokens)}, "
            f"regions={sorted(self.region_tokens)})"
        )

    @classmethod
    def build(
        cls,
        admin_tokens: tuple[str, ...],
        named_admin: tuple[AdminCredential, ...],
        sync_tokens: tuple[str, ...],
        region_tokens: Mapping[str, tuple[str, ...]],
        sources: tuple[Path, ...] = (),
    ) -> "Credentials":
        """Hash and check a configuration: an admin credential and a sync token are required and never shared."""
        admin = named_admin
        if admin_tokens:  # EDGEREC_ADMIN_TOKEN: unnamed, every scope (as before scopes existed)
            admin = (
                AdminCredential(
                    tuple(token_digest("EDGEREC_ADMIN_TOKEN", t) for t in admin_tokens), frozenset({ALL_SCOPES})
                ),
                *admin,
            )
        if not admin:
            raise CredentialError("set EDGEREC_ADMIN_TOKEN (every scope) and/or EDGEREC_ADMIN_TOKENS (scoped)")
        fleet = tuple(token_digest("EDGEREC_SYNC_TOKEN", t) for t in sync_tokens)
        regional = {r: tuple(token_digest("EDGEREC_REGION_TOKENS", t) for t in ts) for r, ts in region_tokens.items()}
        if not fleet and not regional:
            raise CredentialError(
                "set EDGEREC_REGION_TOKENS (per-region edge tokens) and/or EDGEREC_SYNC_TOKEN "
                "(a token valid for every region)"
            )
        every_sync = set(fleet).union(*regional.values())
        if any(d in every_sync for c in admin for d in c.digests):
            raise CredentialError(
                "EDGEREC_ADMIN_TOKEN/EDGEREC_ADMIN_TOKENS must not share a value with an edge sync token"
            )
        return cls(admin, fleet, regional, sources)

    def admin_for(self, presented: bytes | None) -> tuple[AdminCredential, bytes] | None:
        """The admin credential a presented token belongs to, with the token's digest; None if none."""
        digest = presented_digest(presented)
        if digest is None:
            return None
        found = None
        for credential in self.admin:
            if _equals_any(digest, credential.digests) and found is None:
                found = credential
        return None if found is None else (found, digest)

    def sync_scope(self, presented: bytes | None) -> frozenset[str] | None:
        """The regions a sync token may sync ({"*"} for a fleet-wide token), or None when it is no sync token."""
        digest = presented_digest(presented)
        if digest is None:
            return None
        if _equals_any(digest, self.sync_tokens):
            return frozenset({FLEET})
        regions = frozenset(r for r, digests in self.region_tokens.items() if _equals_any(digest, digests))
        return regions or None
