"""The ids, codes and limits every wire schema shares (offers, experiments, events), defined once for origin and
edge as msgspec field types, with the one-line rule each error message states, and the error that names the field."""

from __future__ import annotations

import re
import sys
from datetime import datetime, timezone
from typing import Annotated, Mapping, Sequence, TypeGuard

import msgspec

# Ids of offers, SKUs, groups, experiments, models, requests and events: one alphabet, one length.
ID_ALPHABET = "A-Za-z0-9._:-"
MAX_ID_CHARS = 128
ID_PATTERN = rf"^[{ID_ALPHABET}]{{1,{MAX_ID_CHARS}}}$"
ID_RULE = f"1-{MAX_ID_CHARS} characters of letters, digits and . _ : -"
# Names that show in reports and metrics labels (experiment variants) are shorter.
MAX_NAME_CHARS = 64
NAME_PATTERN = rf"^[{ID_ALPHABET}]{{1,{MAX_NAME_CHARS}}}$"
NAME_RULE = f"1-{MAX_NAME_CHARS} characters of letters, digits and . _ : -"
REGION_PATTERN = r"^[A-Z]{2}$"
CURRENCY_PATTERN = r"^[A-Z]{3}$"
CURRENCY_RULE = "a three-letter ISO 4217 code such as EUR"
MAX_TITLE_CHARS = 300
MAX_BOOST = 100.0  # an offer's campaign boost, and an experiment's extra boost, in score units
MAX_VALUE = 1e9  # a purchase's value
# A bound every finite float meets and no NaN or infinity does: msgspec has no "finite" constraint.
MAX_FLOAT = sys.float_info.max

Id = Annotated[str, msgspec.Meta(pattern=ID_PATTERN)]
Name = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]
RegionCode = Annotated[str, msgspec.Meta(pattern=REGION_PATTERN)]
Currency = Annotated[str, msgspec.Meta(pattern=CURRENCY_PATTERN)]
ShortText = Annotated[str, msgspec.Meta(max_length=MAX_ID_CHARS)]  # a free-form label, never parsed
Finite = Annotated[float, msgspec.Meta(ge=-MAX_FLOAT, le=MAX_FLOAT)]
Boost = Annotated[float, msgspec.Meta(ge=-MAX_BOOST, le=MAX_BOOST)]
# A point in time as the admin API takes it: an ISO 8601 date-time (UTC when it names no zone) or epoch seconds.
Timestamp = str | Finite | None

_REGION_RE = re.compile(REGION_PATTERN)
_ID_RE = re.compile(ID_PATTERN)


class SchemaError(ValueError):
    """A document does not follow its wire schema; the message names the field and says why."""


def is_id(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and bool(_ID_RE.match(value))


def is_region_code(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and bool(_REGION_RE.match(value))


def parse_regions(raw: str) -> tuple[str, ...]:
    """Parse a comma-separated list of market codes ("GB,DE") into a sorted tuple."""
    regions = tuple(sorted({part.strip().upper() for part in raw.split(",") if part.strip()}))
    if not regions:
        raise ValueError("no region given")
    bad = [r for r in regions if not _REGION_RE.match(r)]
    if bad:
        raise ValueError(f"not a two-letter market code: {', '.join(bad)}")
    return regions


def epoch_seconds(value: str | float | None, field: str, error: type[SchemaError] = SchemaError) -> float | None:
    """A Timestamp field (already type-checked by its Struct) as epoch seconds."""
    if value is None or isinstance(value, float):
        return value
    return iso_seconds(value, field, error)


def iso_seconds(value: str, field: str, error: type[SchemaError] = SchemaError) -> float:
    """An ISO 8601 date-time as epoch seconds, UTC where it names no zone; `error` naming the field where it is not
    one."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise error(f"{field}: {value!r} is not an ISO 8601 date-time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


_AT = re.compile(r" - at (?:`key` in )?`\$(.*)`$")  # a map key's error is "at `key` in `$.path`"
_INDEX = re.compile(r"\[[^\]]*\]$")
_UNKNOWN = re.compile(r"^Object contains unknown field `(.*)`$")
_MISSING = re.compile(r"^Object missing required field `(.*)`$")


def error_path(error: msgspec.ValidationError) -> str:
    """Where msgspec found the error, without its leading `$` ("" for the document itself)."""
    found = _AT.search(str(error))
    return found.group(1) if found else ""


def explain(
    error: msgspec.ValidationError,
    rules: Mapping[str, str],
    names: Sequence[str] = (),
    prefix: str = "",
    offset: int = 0,
) -> str:
    """msgspec's error as this project words it: "<where>: <the field's rule>", where is the path to the field
    (`variants[1].weight`) and the rule is `rules[field]`; msgspec's own words for a field without one.
    `names` names the positions of an array-like Struct (its fields in order), so `[3][1]` reads `[3].kind`;
    `prefix` is the path of the document decoded, and `offset` is added to its first index."""
    text = str(error)
    found = _AT.search(text)
    detail, path = (text[: found.start()], found.group(1)) if found else (text, "")
    if offset:
        path = re.sub(r"^\[(\d+)\]", lambda m: f"[{int(m.group(1)) + offset}]", path)
    if names:
        path = re.sub(
            r"^\[(\d+)\]\[(\d+)\]",
            lambda m: f"[{m.group(1)}].{names[int(m.group(2))]}" if int(m.group(2)) < len(names) else m.group(0),
            path,
        )
    where = (prefix + path).lstrip(".")
    for pattern, said in ((_UNKNOWN, "unknown field(s)"), (_MISSING, "missing required field(s)")):
        matched = pattern.match(detail)
        if matched:
            return f"{where}: {said}: {matched.group(1)}" if where else f"{said}: {matched.group(1)}"
    field = where
    while _INDEX.search(field):  # regions[0] and boosts[...] are ruled by their list's or map's rule
        field = _INDEX.sub("", field)
    rule = rules.get(field.rpartition(".")[2])
    if rule:
        return f"{field}: {rule}"
    return f"{where or 'document'}: {detail[0].lower()}{detail[1:]}"
