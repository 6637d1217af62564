"""The origin's token settings, read from the environment (or `<VAR>_FILE`), checked and hashed: admin tokens,
named scoped admin credentials, the fleet-wide sync token and the per-region edge tokens. Re-read at run time on
a rotation (SIGHUP or a changed file)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

from edgerec.core.settings import (
    MIN_SECRET_CHARS,
    SettingError,
    require_strong_secrets,
    secret_from_env,
    secret_values_from_env,
)
from origin_sync.origin.credentials import (
    AdminCredential,
    CredentialError,
    Credentials,
    parse_admin_credentials,
)
from origin_sync.wire.fields import is_region_code

TOKEN_VARIABLES = ("EDGEREC_ADMIN_TOKEN", "EDGEREC_ADMIN_TOKENS", "EDGEREC_SYNC_TOKEN", "EDGEREC_REGION_TOKENS")


def _check_secrets(variable: str, values: tuple[str, ...]) -> tuple[str, ...]:
    if any(len(v) < MIN_SECRET_CHARS for v in values):
        raise SettingError(f"{variable}: every value must be a secret of at least {MIN_SECRET_CHARS} characters")
    return values


def secret_list(variable: str, required: bool = True) -> tuple[str, ...]:
    """Read a secret that may hold several accepted values ("new,old" during a rotation); the first is current.
    It comes from the variable or from the file `<variable>_FILE` names."""
    values = secret_values_from_env(variable)
    if not values and required:
        raise SettingError(f"{variable} must be set (or {variable}_FILE)")
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
            raise SettingError(f"{variable}: not valid JSON") from None
        pairs = [(r, [v] if isinstance(v, str) else v) for r, v in loaded.items()]
    else:
        pairs = []
        for item in filter(None, (p.strip() for p in raw.split(","))):
            region, sep, values = item.partition("=")
            if not sep:
                raise SettingError(f"{variable}: expected REGION=token|token,... (an item has no '=')")
            pairs.append((region.strip(), [v.strip() for v in values.split("|") if v.strip()]))
    tokens: dict[str, tuple[str, ...]] = {}
    for region, values in pairs:
        region = str(region).upper()
        if not is_region_code(region):
            raise SettingError(f"{variable}: {region!r} is not a two-letter market code")
        if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
            raise SettingError(f"{variable}: region {region} needs at least one token")
        tokens[region] = tokens.get(region, ()) + _check_secrets(variable, tuple(values))
    return tokens


def read_token_settings() -> tuple[
    tuple[str, ...], tuple[AdminCredential, ...], tuple[str, ...], dict[str, tuple[str, ...]]
]:
    """The token settings as configured: EDGEREC_ADMIN_TOKEN (every scope), EDGEREC_ADMIN_TOKENS (named, scoped),
    EDGEREC_SYNC_TOKEN (every region) and EDGEREC_REGION_TOKENS. Any entry may be `sha256:<hex>` instead of a token."""
    try:
        named_admin = parse_admin_credentials(secret_from_env("EDGEREC_ADMIN_TOKENS"))
    except CredentialError as exc:
        raise SettingError(str(exc)) from None
    return (
        secret_list("EDGEREC_ADMIN_TOKEN", required=False),
        named_admin,
        secret_list("EDGEREC_SYNC_TOKEN", required=False),
        parse_region_tokens(secret_from_env("EDGEREC_REGION_TOKENS")),
    )


def credential_files() -> tuple[Path, ...]:
    """The files the token settings are read from (a JSON file named by the variable, or `<variable>_FILE`)."""
    files = []
    for variable in TOKEN_VARIABLES:
        for value in (os.environ.get(variable, "").strip(), os.environ.get(f"{variable}_FILE", "").strip()):
            if value and not value.startswith(("{", "sha256:")) and "," not in value and Path(value).is_file():
                files.append(Path(value))
    return tuple(files)


def hash_credentials(
    admin_tokens: tuple[str, ...],
    named_admin: tuple[AdminCredential, ...],
    sync_tokens: tuple[str, ...],
    region_tokens: Mapping[str, tuple[str, ...]],
) -> Credentials:
    try:
        return Credentials.build(admin_tokens, named_admin, sync_tokens, region_tokens, credential_files())
    except CredentialError as exc:
        raise SettingError(str(exc)) from None


def load_credentials() -> Credentials:
    """Read, check and hash the token settings again: what the origin does on SIGHUP or when one of their files
    changes, so that a rotation needs no restart. SettingError leaves the caller on the credentials it has."""
    return hash_credentials(*read_token_settings())


def refuse_weak_origin_secrets(
    admin_tokens: tuple[str, ...], sync_tokens: tuple[str, ...], region_tokens: Mapping[str, tuple[str, ...]]
) -> None:
    """Production mode: every plaintext secret the origin holds must be strong; the error names the variable.
    (Whether any admin credential is set at all is checked where the token settings are read.)"""
    require_strong_secrets("EDGEREC_ADMIN_TOKEN", admin_tokens, required=False)
    require_strong_secrets("EDGEREC_SYNC_TOKEN", sync_tokens, required=False)
    for region, tokens in sorted(region_tokens.items()):
        require_strong_secrets(f"EDGEREC_REGION_TOKENS (region {region})", tokens)
    password = os.environ.get("PGPASSWORD", "")  # libpq reads it itself, so it has no _FILE form here
    require_strong_secrets("PGPASSWORD", (password,) if password else (), required=False)
