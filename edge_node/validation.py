"""Parsing and validation of shopper requests: every bad input becomes a RequestError with a message a client can act on."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson

from origin_sync.wire.fields import MAX_ID_CHARS  # one length for every id, at edge and origin

MAX_RECENT_ITEMS = 1000
MAX_EXCLUDE = 500
# Every number a request carries is finite and inside a documented range (edge_node.openapi states them).
MAX_AGE_DAYS = 36500  # recent_items[].age_days: 0 to 100 years
MIN_EPOCH_S = 0  # context.time as epoch seconds: 1970-01-01T00:00:00Z ...
MAX_EPOCH_S = 253402300799  # ... to 9999-12-31T23:59:59Z, the end of what the ISO 8601 form can say
_NUMBER = (int, float)  # exact types: bool is not a number here
FIELDS = frozenset({"shopper_id", "region", "recent_items", "k", "exclude", "context", "slot"})
QUERY_FIELDS = frozenset({"region", "k", "slot", "device"})
CONTEXT_FIELDS = frozenset({"time", "device"})
DEVICES = frozenset({"desktop", "mobile", "tablet", "app", "other"})
SLOT_RE = re.compile(r"^[a-z0-9_-]{1,32}$")


class RequestError(Exception):
    """A client error: HTTP status, a machine-readable code and a human-readable message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> bytes:
        return orjson.dumps({"error": {"code": self.code, "message": self.message}})


class RateLimited(RequestError):
    """429: the client is over its rate; `retry_after` whole seconds (>= 1) until it may try again."""

    def __init__(self, wait_s: float) -> None:
        from edgerec.core.ratelimit import retry_after

        self.retry_after = retry_after(wait_s)
        super().__init__(429, "rate_limited", f"too many requests from this client; retry in {self.retry_after} s")


def invalid(message: str) -> RequestError:
    return RequestError(422, "invalid_request", message)


@dataclass(frozen=True, slots=True)
class RecommendationRequest:
    shopper_id: str | None
    region: str | None
    recent_items: tuple[str, ...]        # SKUs, most recent last
    recent_ages_days: tuple[float, ...] | None
    k: int
    exclude: tuple[str, ...]
    at: float | None                     # epoch seconds of the shopper's "now", if sent
    device: str | None
    slot: str | None = None              # where the offers are shown ("home", "cart", ...): a label


def _short_string(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS:
        raise invalid(f"{field}: expected a non-empty string of at most {MAX_ID_CHARS} characters")
    return value


def _slot(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not SLOT_RE.match(value):
        raise invalid("slot: 1-32 characters of lower-case letters, digits, '-' and '_'")
    return value


def _k(value: Any, max_k: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"k: expected an integer between 1 and {max_k}")
    if not 1 <= value <= max_k:
        raise invalid(f"k: {value} is out of range; expected 1 to {max_k}")
    return value


def _region(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != 2 or not value.isalpha() or not value.isascii():
        raise invalid("region: expected a two-letter market code such as \"DE\"")
    return value.upper()


def _device(value: Any) -> str | None:
    if value is not None and value not in DEVICES:
        raise invalid(f"context.device: one of {', '.join(sorted(DEVICES))}")
    return value


def _event_error(i: int, event: Any) -> RequestError:
    """The message for a bad purchase event (built only on failure: the valid path stays cheap)."""
    if isinstance(event, str):
        return invalid(f"recent_items[{i}]: expected a non-empty string of at most {MAX_ID_CHARS} characters")
    if not isinstance(event, dict):
        return invalid(f"recent_items[{i}]: expected a SKU string or an object with 'item'")
    extra = set(event) - {"item", "age_days"}
    if extra:
        return invalid(f"recent_items[{i}]: unknown field(s) {', '.join(sorted(extra))}")
    item = event.get("item")
    if not isinstance(item, str) or not item or len(item) > MAX_ID_CHARS:
        return invalid(f"recent_items[{i}].item: expected a non-empty string of at most {MAX_ID_CHARS} characters")
    return invalid(f"recent_items[{i}].age_days: expected a number from 0 to {MAX_AGE_DAYS} (days), or null")


def _recent_items(value: Any) -> tuple[tuple[str, ...], tuple[float, ...] | None]:
    """SKUs (upper-cased) and, when any event carries one, ages in days (NaN where an event has none)."""
    if not isinstance(value, list):
        raise invalid("recent_items: expected a list of SKUs or {\"item\": SKU, \"age_days\": number} objects")
    if len(value) > MAX_RECENT_ITEMS:
        raise invalid(f"recent_items: at most {MAX_RECENT_ITEMS} events, got {len(value)}")
    skus: list[str] = []
    ages: list[float] | None = None
    for i, event in enumerate(value):
        kind = type(event)
        if kind is str:
            if not event or len(event) > MAX_ID_CHARS:
                raise _event_error(i, event)
            skus.append(event.upper())
            if ages is not None:
                ages.append(math.nan)
            continue
        if kind is not dict:
            raise _event_error(i, event)
        item, age = event.get("item"), event.get("age_days")
        if type(item) is not str or not item or len(item) > MAX_ID_CHARS \
                or len(event) > 1 + ("age_days" in event) or (len(event) == 2 and "item" not in event):
            raise _event_error(i, event)
        skus.append(item.upper())
        if age is not None:
            # One chained comparison bounds it (NaN and infinities fail it too: none can come out of orjson anyway).
            if type(age) not in _NUMBER or not 0 <= age <= MAX_AGE_DAYS:
                raise _event_error(i, event)
            if ages is None:
                ages = [math.nan] * (len(skus) - 1)
            ages.append(float(age))
        elif ages is not None:
            ages.append(math.nan)
    return tuple(skus), (tuple(ages) if ages is not None else None)


def _time(value: Any) -> float:
    if type(value) in _NUMBER:
        if MIN_EPOCH_S <= value <= MAX_EPOCH_S:
            return float(value)
        raise invalid(f"context.time: {value!r} epoch seconds is out of range; expected {MIN_EPOCH_S} to "
                      f"{MAX_EPOCH_S} (1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z)")
    if isinstance(value, str) and len(value) <= 40:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise invalid(f"context.time: {value!r} is not an ISO 8601 date-time") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        return parsed.timestamp()
    raise invalid("context.time: expected an ISO 8601 date-time or epoch seconds")


def parse_recommendation_request(body: bytes, max_k: int, default_k: int) -> RecommendationRequest:
    if not body.strip():
        raise RequestError(400, "empty_body", "request body is empty; send a JSON object")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(400, "invalid_json", f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise invalid("request body must be a JSON object")
    unknown = set(data) - FIELDS
    if unknown:
        raise invalid(f"unknown field(s): {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(FIELDS))}")

    shopper_id = data.get("shopper_id")
    if shopper_id is not None:
        shopper_id = _short_string(shopper_id, "shopper_id")
    region = _region(data.get("region"))
    recent, ages = _recent_items(data.get("recent_items", []))
    k = _k(data.get("k", default_k), max_k)
    exclude_raw = data.get("exclude", [])
    if not isinstance(exclude_raw, list) or len(exclude_raw) > MAX_EXCLUDE:
        raise invalid(f"exclude: expected a list of at most {MAX_EXCLUDE} offer ids or SKUs")
    exclude = tuple(_short_string(x, f"exclude[{i}]") for i, x in enumerate(exclude_raw))
    context = data.get("context", {})
    if not isinstance(context, dict):
        raise invalid("context: expected an object with optional 'time' and 'device'")
    unknown_ctx = set(context) - CONTEXT_FIELDS
    if unknown_ctx:
        raise invalid(f"context: unknown field(s) {', '.join(sorted(unknown_ctx))}")
    at = _time(context["time"]) if context.get("time") is not None else None
    device = _device(context.get("device"))
    return RecommendationRequest(shopper_id, region, recent, ages, k, exclude, at, device, _slot(data.get("slot")))


def parse_anonymous_query(query: dict[str, list[str]], max_k: int, default_k: int) -> RecommendationRequest:
    """The GET form: region-level offers for a shopper the edge knows nothing about, cacheable by a CDN."""
    unknown = set(query) - QUERY_FIELDS
    if unknown:
        raise invalid(f"unknown query parameter(s): {', '.join(sorted(unknown))}; "
                      f"allowed: {', '.join(sorted(QUERY_FIELDS))}")
    repeated = [name for name, values in query.items() if len(values) > 1]
    if repeated:
        raise invalid(f"query parameter(s) given more than once: {', '.join(sorted(repeated))}")
    one = {name: values[0] for name, values in query.items()}
    k = default_k
    if "k" in one:
        if not one["k"].isdigit() or not one["k"].isascii() or len(one["k"]) > 6:  # "²".isdigit() is True
            raise invalid(f"k: expected an integer between 1 and {max_k}")
        k = _k(int(one["k"]), max_k)
    return RecommendationRequest(
        shopper_id=None, region=_region(one.get("region")), recent_items=(), recent_ages_days=None, k=k,
        exclude=(), at=None, device=_device(one.get("device")), slot=_slot(one.get("slot")),
    )
