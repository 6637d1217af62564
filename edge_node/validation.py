"""Parsing and validation of shopper requests: every bad input becomes a RequestError with a message a client can act on."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson

MAX_RECENT_ITEMS = 1000
MAX_EXCLUDE = 500
MAX_ID_CHARS = 128
FIELDS = frozenset({"shopper_id", "region", "recent_items", "k", "exclude", "context"})
CONTEXT_FIELDS = frozenset({"time", "device"})
DEVICES = frozenset({"desktop", "mobile", "tablet", "app", "other"})


class RequestError(Exception):
    """A client error: HTTP status, a machine-readable code and a human-readable message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> bytes:
        return orjson.dumps({"error": {"code": self.code, "message": self.message}})


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


def _short_string(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS:
        raise invalid(f"{field}: expected a non-empty string of at most {MAX_ID_CHARS} characters")
    return value


def _recent_items(value: Any) -> tuple[tuple[str, ...], tuple[float, ...] | None]:
    if not isinstance(value, list):
        raise invalid("recent_items: expected a list of SKUs or {\"item\": SKU, \"age_days\": number} objects")
    if len(value) > MAX_RECENT_ITEMS:
        raise invalid(f"recent_items: at most {MAX_RECENT_ITEMS} events, got {len(value)}")
    skus: list[str] = []
    ages: list[float] = []
    for i, event in enumerate(value):
        if isinstance(event, str):
            skus.append(_short_string(event, f"recent_items[{i}]").upper())
            ages.append(math.nan)
        elif isinstance(event, dict):
            extra = set(event) - {"item", "age_days"}
            if extra:
                raise invalid(f"recent_items[{i}]: unknown field(s) {', '.join(sorted(extra))}")
            skus.append(_short_string(event.get("item"), f"recent_items[{i}].item").upper())
            age = event.get("age_days")
            if age is None:
                ages.append(math.nan)
            elif isinstance(age, bool) or not isinstance(age, (int, float)) or not math.isfinite(age) or age < 0:
                raise invalid(f"recent_items[{i}].age_days: expected a number >= 0")
            else:
                ages.append(float(age))
        else:
            raise invalid(f"recent_items[{i}]: expected a SKU string or an object with 'item'")
    has_ages = any(not math.isnan(a) for a in ages)
    return tuple(skus), (tuple(ages) if has_ages else None)


def _time(value: Any) -> float:
    if isinstance(value, bool):
        raise invalid("context.time: expected an ISO 8601 date-time or epoch seconds")
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
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
    region = data.get("region")
    if region is not None:
        if not isinstance(region, str) or len(region) != 2 or not region.isalpha():
            raise invalid("region: expected a two-letter market code such as \"DE\"")
        region = region.upper()
    recent, ages = _recent_items(data.get("recent_items", []))
    k = data.get("k", default_k)
    if isinstance(k, bool) or not isinstance(k, int):
        raise invalid(f"k: expected an integer between 1 and {max_k}")
    if not 1 <= k <= max_k:
        raise invalid(f"k: {k} is out of range; expected 1 to {max_k}")
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
    device = context.get("device")
    if device is not None and device not in DEVICES:
        raise invalid(f"context.device: one of {', '.join(sorted(DEVICES))}")
    return RecommendationRequest(shopper_id, region, recent, ages, k, exclude, at, device)
