"""Settings the origin and the edge share: secrets read from the environment or from `<VAR>_FILE`, and production
mode with its refusals (weak or missing secrets, plain HTTP beyond loopback)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Mapping
from urllib.parse import urlparse

MIN_SECRET_CHARS = 16
# Production refuses a secret with fewer distinct characters than this ("aaaaaaaaaaaaaaaa", "abababab...").
MIN_DISTINCT_SECRET_CHARS = 8
ENV_VARIABLE = "EDGEREC_ENV"
PRODUCTION = "production"
_ENVIRONMENTS = ("", "development", "test", PRODUCTION)
# Values from documentation, examples and common placeholders: never acceptable in production.
KNOWN_DEMO_SECRETS = frozenset({
    "changeme", "change-me", "changemechangeme", "secret", "password", "admin", "admin-token", "sync-token",
    "cdn-secret", "pseudonym-key", "tok1", "tok2", "tok1old", "new-sync-token-0001", "old-sync-token-0001",
    "0123456789abcdef", "00000000000000000000000000000000", "abcdefghijklmnop",
})


class SettingError(ValueError):
    """A setting is missing or invalid; the message names the variable or flag, never a secret's value."""


def secret_from_env(variable: str, environ: Mapping[str, str] | None = None) -> str:
    """A secret's text: the variable's value, or the contents of the file `<variable>_FILE` names (stripped).

    Files let an orchestrator mount secrets (Kubernetes, Docker secrets) instead of exporting them; setting both
    is refused, since one of them would be silently ignored. "" when neither is set.
    """
    environ = os.environ if environ is None else environ
    value = environ.get(variable, "").strip()
    file_variable = f"{variable}_FILE"
    path = environ.get(file_variable, "").strip()
    if not path:
        return value
    if value:
        raise SettingError(f"set {variable} or {file_variable}, not both")
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise SettingError(f"{file_variable}: cannot read {path} ({reason})") from None


def secret_values_from_env(variable: str, environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """A secret holding several accepted values ("new,old" during a rotation), from the variable or its file."""
    return tuple(v.strip() for v in secret_from_env(variable, environ).split(",") if v.strip())


def production_mode(flag: bool = False, environ: Mapping[str, str] | None = None) -> bool:
    """True with `--production` or EDGEREC_ENV=production; an unknown EDGEREC_ENV is refused, not guessed."""
    environ = os.environ if environ is None else environ
    name = environ.get(ENV_VARIABLE, "").strip().lower()
    if name not in _ENVIRONMENTS:
        raise SettingError(f"{ENV_VARIABLE}: {name!r} is not one of production, development, test")
    return flag or name == PRODUCTION


def weak_secret_reason(value: str) -> str | None:
    """Why a secret is too weak for production (short, low variety, a known demo value), or None."""
    if len(value) < MIN_SECRET_CHARS:
        return f"shorter than {MIN_SECRET_CHARS} characters"
    if value.lower() in KNOWN_DEMO_SECRETS or "changeme" in value.lower().replace("-", "").replace("_", ""):
        return "a known example or placeholder value"
    if len(set(value)) < MIN_DISTINCT_SECRET_CHARS:
        return f"fewer than {MIN_DISTINCT_SECRET_CHARS} distinct characters"
    return None


def require_strong_secrets(variable: str, values: tuple[str, ...] | list[str], required: bool = True) -> None:
    """Production check of one secret variable (every value of a rotation); the message names the variable."""
    if not values:
        if required:
            raise SettingError(f"{variable} must be set (or {variable}_FILE naming a file that holds it)")
        return
    for position, value in enumerate(values, start=1):
        reason = weak_secret_reason(value)
        if reason is not None:
            which = f" (value {position} of {len(values)})" if len(values) > 1 else ""
            raise SettingError(f"{variable}{which} is too weak for production: {reason}; "
                               "generate one with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`")


def is_loopback_host(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_tls_beyond_loopback(setting: str, url: str) -> None:
    """Production refuses an http:// URL to anything but this machine: tokens would cross the network in clear."""
    parsed = urlparse(url)
    if parsed.scheme == "http" and not is_loopback_host(parsed.hostname or ""):
        raise SettingError(f"{setting}: {url!r} is plain HTTP to another machine; production needs https:// "
                           "(plain HTTP is allowed to loopback only)")


def parse_flag(setting: str, raw: str | bool) -> bool:
    """A yes/no setting from a flag or a variable: 1/true/yes/on or 0/false/no/off ("" is no)."""
    if isinstance(raw, bool):
        return raw
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("", "0", "false", "no", "off"):
        return False
    raise SettingError(f"{setting}: {raw!r} is not one of true/false, yes/no, 1/0")
