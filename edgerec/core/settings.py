"""Settings the origin and the edge share: the typed settings model each service's settings derive from (flags,
environment, settings file), secrets read from the environment or `<VAR>_FILE`, and production mode's refusals."""

from __future__ import annotations

import argparse
import difflib
import ipaddress
import json
import math
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Callable, ClassVar, Mapping, Self
from urllib.parse import urlparse

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, InitSettingsSource, SettingsConfigDict

MIN_SECRET_CHARS = 16
# Production refuses a secret with fewer distinct characters than this ("aaaaaaaaaaaaaaaa", "abababab...").
MIN_DISTINCT_SECRET_CHARS = 8
ENV_VARIABLE = "EDGEREC_ENV"
PRODUCTION = "production"
_ENVIRONMENTS = ("", "development", "test", PRODUCTION)
# Values from documentation, examples and common placeholders: never acceptable in production.
KNOWN_DEMO_SECRETS = frozenset(
    {
        "changeme",
        "change-me",
        "changemechangeme",
        "secret",
        "password",
        "admin",
        "admin-token",
        "sync-token",
        "cdn-secret",
        "pseudonym-key",
        "tok1",
        "tok2",
        "tok1old",
        "new-sync-token-0001",
        "old-sync-token-0001",
        "0123456789abcdef",
        "00000000000000000000000000000000",
        "abcdefghijklmnop",
    }
)


class SettingError(ValueError):
    """A setting is missing or invalid; the message names the variable or flag, never a secret's value."""


class ConfigError(SettingError):
    """A service's settings refused at start as its config checks them together (edge_node.config,
    origin_sync.origin.config): the message names the flag and the variable."""


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
            raise SettingError(
                f"{variable}{which} is too weak for production: {reason}; "
                "generate one with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )


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
        raise SettingError(
            f"{setting}: {url!r} is plain HTTP to another machine; production needs https:// "
            "(plain HTTP is allowed to loopback only)"
        )


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


# -- typed service settings: flags > environment > settings file > defaults --------------------------------------


def _yes_no(raw: object) -> object:
    if not isinstance(raw, str):
        return raw
    try:
        return parse_flag("", raw)
    except SettingError:
        raise ValueError(f"{raw!r} is not one of true/false, yes/no, 1/0, on/off") from None


# A yes/no setting: true/false, yes/no, 1/0, on/off ("" is no), as every variable of ours has always taken.
YesNo = Annotated[bool, BeforeValidator(_yes_no)]


def bounded(low: float, high: float = math.inf, *, low_open: bool = False, what: str) -> AfterValidator:
    """A number setting's range, for `Annotated[int | float, bounded(...)]`: `low <= value <= high` (`low < value`
    with low_open), else the one-line message `what`. NaN is never in range."""

    def check(value: float) -> float:
        if not ((low < value if low_open else low <= value) and value <= high):
            raise ValueError(what)
        return value

    return AfterValidator(check)


def checked_by(parse: Callable[[str], object]) -> AfterValidator:
    """A text setting kept as written once `parse` accepts it, for `Annotated[str, checked_by(parse)]`: the
    ValueError of `parse` is the one-line message."""

    def check(raw: str) -> str:
        parse(raw)
        return raw

    return AfterValidator(check)


def _tcp_port(port: int) -> int:
    if not 0 < port < 65536:
        raise ValueError(f"{port} is not a TCP port")
    return port


# The number settings both services have, each checked the same way.
TcpPort = Annotated[int, AfterValidator(_tcp_port)]
RateLimit = Annotated[float, bounded(0, what="at least 0 (0 = no limit)")]
AtLeastOne = Annotated[int, bounded(1, what="at least 1")]
ReloadInterval = Annotated[float, bounded(0, 3600, low_open=True, what="between 0 and 3600 seconds")]


def setting(default: Any, env: str | None, description: str) -> Any:
    """A field of a ServiceSettings: its default, its environment variable (None: flag and file only) and its
    --help text. The field's name is the flag's (`max_wait` is `--max-wait`) and the settings file's key."""
    return Field(default, validation_alias=env, description=description)


class _NamedEnvSource(EnvSettingsSource):
    """The environment, for the fields that name a variable only (never a variable called after a field)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        alias = field.validation_alias
        if not isinstance(alias, str):
            return None, field_name, False
        # The variable only: pydantic-settings would also read one named after the field (`port`, `production`).
        return self.env_vars.get(alias), alias, False


def read_settings_file(path: Path) -> dict[str, Any]:
    """A settings file: TOML (`.toml`) or JSON (`.json`), one flat table of setting names to values."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise SettingError(f"--config: cannot read {path} ({reason})") from None
    try:
        if path.suffix.lower() == ".toml":
            data: Any = tomllib.loads(text)
        elif path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            raise SettingError(f"--config: {path} is neither .toml nor .json")
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        if isinstance(exc, SettingError):
            raise
        raise SettingError(f"--config: {path} is not valid {path.suffix[1:].upper()} ({exc})") from None
    if not isinstance(data, dict):
        raise SettingError(f"--config: {path} must hold one table (object) of settings")
    return data


class ServiceSettings(BaseSettings):
    """A service's settings, typed and checked at start. Each comes from its flag, else its environment variable,
    else the settings file (`--config FILE`), else its default; a bad value is one SettingError naming the flag,
    the variable and where the value came from."""

    model_config = SettingsConfigDict(
        extra="forbid", frozen=True, validate_by_name=True, validate_by_alias=True, case_sensitive=True
    )

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """One flag a field, taken as text (the model checks it); yes/no fields are switches."""
        for name, field in cls.model_fields.items():
            flag = "--" + name.replace("_", "-")
            env = field.validation_alias if isinstance(field.validation_alias, str) else None
            where = ", ".join(
                x for x in (env, None if field.default in ("", None, False) else f"default {field.default}") if x
            )
            text = f"{field.description} ({where})" if where else field.description
            if field.annotation is bool:
                parser.add_argument(flag, dest=name, action="store_const", const="true", default=None, help=text)
            else:
                parser.add_argument(flag, dest=name, default=None, metavar=name.upper(), help=text)
        parser.add_argument(
            "--config",
            metavar="FILE",
            default=None,
            help="a settings file, TOML (.toml) or JSON (.json): setting names (the flags' names "
            "with _ for -) to values; flags and environment variables override it",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Self:
        flags = {name: value for name in cls.model_fields if (value := getattr(args, name, None)) is not None}
        config = getattr(args, "config", None)
        return cls.load(flags, Path(config) if config else None)

    @classmethod
    def load(cls, flags: Mapping[str, Any] | None = None, config_file: Path | None = None) -> Self:
        flags = dict(flags or {})
        file_values = read_settings_file(config_file) if config_file is not None else {}
        unknown = sorted(set(file_values) - set(cls.model_fields))
        if unknown:
            near = difflib.get_close_matches(unknown[0], list(cls.model_fields), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise SettingError(f"--config: {config_file}: unknown setting {unknown[0]!r}{hint}")
        sources = (InitSettingsSource(cls, flags), _NamedEnvSource(cls), InitSettingsSource(cls, file_values))
        try:
            # _build_sources: pydantic-settings' own way to hand it prepared sources (dataclass_transform hides it).
            return cls(_build_sources=(sources, {}))  # type: ignore[call-arg]
        except ValidationError as exc:
            raise cls._one_line(exc, flags, file_values, config_file) from None

    @classmethod
    def label(cls, name: str) -> str:
        """How a message names a setting: `--flag/VARIABLE`, or `--flag` without a variable."""
        alias = cls.model_fields[name].validation_alias
        flag = "--" + name.replace("_", "-")
        return f"{flag}/{alias}" if isinstance(alias, str) else flag

    @classmethod
    def _one_line(
        cls, exc: ValidationError, flags: Mapping[str, Any], file_values: Mapping[str, Any], config_file: Path | None
    ) -> SettingError:
        error = exc.errors(include_url=False)[0]
        key = str(error["loc"][0]) if error["loc"] else ""
        by_alias = {f.validation_alias: n for n, f in cls.model_fields.items() if isinstance(f.validation_alias, str)}
        name = by_alias.get(key, key)
        if not key:  # a check of several settings together: its message names them
            return SettingError(str(error["msg"]).removeprefix("Value error, "))
        if name not in cls.model_fields:
            return SettingError(f"{key}: {error['msg']}")
        alias = cls.model_fields[name].validation_alias
        if name in flags:
            source = "--" + name.replace("_", "-")
        elif isinstance(alias, str) and alias in os.environ:
            source = alias
        else:
            source = f"{config_file}" if name in file_values else ""
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] != "value_error":
            message = f"{error['input']!r}: {message[:1].lower()}{message[1:]}"
        where = f"(from {source})" if source else "(not set)"
        return SettingError(" ".join(f"{cls.label(name)}: {message} {where}".split()))


class ConfiguredBy:
    """A service's checked config made from its ServiceSettings (`settings_class`): the flags those add to a parser,
    and the config from the parsed flags by the service's own `from_settings`."""

    settings_class: ClassVar[type[ServiceSettings]]

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        cls.settings_class.add_arguments(parser)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Self:
        return cls.from_settings(cls.settings_class.from_args(args))

    @classmethod
    def from_settings(cls, settings: Any) -> Self:
        raise NotImplementedError
