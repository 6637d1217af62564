"""The walk's first step: parsing and validation of shopper requests (the POST body by msgspec, the GET query by
hand); every bad input becomes a RequestError with a message a client can act on, naming the field."""

from __future__ import annotations

import math
import re
from typing import Annotated, Literal, get_args

import msgspec
import orjson
from msgspec import UNSET, Meta, Struct, UnsetType

from origin_sync.wire.fields import (  # one rule for every id and date-time, at edge and origin
    ID_RULE,
    MAX_ID_CHARS,
    Id,
    SchemaError,
    iso_seconds,
)

MAX_RECENT_ITEMS = 1000
MAX_EXCLUDE = 500
MAX_CART = 100  # offer ids or SKUs in the shopper's cart now
# Every number a request carries is finite and inside a documented range (edge_node.openapi states them).
MAX_AGE_DAYS = 36500  # recent_items[].age_days: 0 to 100 years
MIN_EPOCH_S = 0  # context.time as epoch seconds: 1970-01-01T00:00:00Z ...
MAX_EPOCH_S = 253402300799  # ... to 9999-12-31T23:59:59Z, the end of what the ISO 8601 form can say
QUERY_FIELDS = frozenset({"region", "k", "slot", "device"})
Device = Literal["desktop", "mobile", "tablet", "app", "other"]
DEVICES = frozenset(get_args(Device))
SLOT_RE = re.compile(r"^[a-z0-9_-]{1,32}$")
REGION_RE = re.compile(r"^[A-Za-z]{2}$")


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


# The body as it is sent, typed for msgspec, which decodes and checks it in one pass (unknown fields refused).
ShortString = Annotated[str, Meta(min_length=1, max_length=MAX_ID_CHARS)]


class PurchaseEvent(Struct, frozen=True, forbid_unknown_fields=True):
    item: ShortString
    age_days: Annotated[float, Meta(ge=0, le=MAX_AGE_DAYS)] | None = None


class ContextField(Struct, frozen=True, forbid_unknown_fields=True):
    time: Annotated[float, Meta(ge=MIN_EPOCH_S, le=MAX_EPOCH_S)] | Annotated[str, Meta(max_length=40)] | None = None
    device: Device | None = None


class RecommendationBody(Struct, frozen=True, forbid_unknown_fields=True):
    shopper_id: ShortString | None = None
    region: Annotated[str, Meta(pattern=REGION_RE.pattern)] | None = None
    recent_items: Annotated[tuple[ShortString | PurchaseEvent, ...], Meta(max_length=MAX_RECENT_ITEMS)] = ()
    k: int | UnsetType = UNSET  # its bounds are the edge's setting: checked after decoding
    exclude: Annotated[tuple[ShortString, ...], Meta(max_length=MAX_EXCLUDE)] = ()
    cart: Annotated[tuple[Id, ...], Meta(max_length=MAX_CART)] = ()
    context: ContextField = ContextField()
    slot: Annotated[str, Meta(pattern=SLOT_RE.pattern)] | None = None


_BODY = msgspec.json.Decoder(RecommendationBody)
FIELDS = frozenset(RecommendationBody.__struct_fields__)


class RecommendationRequest(Struct, frozen=True):
    """A request, checked and normalized: what the rest of the walk takes."""

    shopper_id: str | None
    region: str | None  # upper case; None: the CDN's country or the edge's only region decides
    recent_items: tuple[str, ...]  # SKUs (upper case), most recent last
    recent_ages_days: tuple[float, ...] | None  # aligned with recent_items, NaN where an event has none
    k: int
    exclude: tuple[str, ...]
    at: float | None  # epoch seconds of the shopper's "now", if sent
    device: str | None
    slot: str | None = None  # where the offers are shown ("home", "cart", ...): a label
    cart: tuple[str, ...] = ()  # offer ids or SKUs in the cart now, as sent (edge_node.shoppers resolves them)


def parse_recommendation_request(
    body: bytes, max_k: int, default_k: int, context_length: int | None = None
) -> RecommendationRequest:
    """The POST body, decoded, checked and normalized; `context_length` (the served models' shortest) bounds
    recent_items. A RequestError (4xx) says what is wrong, naming the field."""
    try:
        sent = _BODY.decode(body)
    except msgspec.DecodeError as error:  # ValidationError included
        raise _refusal(body, error, max_k) from None
    k = default_k if sent.k is UNSET else sent.k
    if not 1 <= k <= max_k:
        raise invalid(f"k: {k} is out of range; expected 1 to {max_k}")
    skus, ages = _events(sent.recent_items)
    if context_length is not None and len(skus) > context_length:
        raise invalid(f"recent_items: at most {context_length} events (the model's context length), got {len(skus)}")
    context = sent.context
    at = context.time
    if type(at) is str:
        at = _iso_time(at)
    region = sent.region
    return RecommendationRequest(
        sent.shopper_id,
        region.upper() if region is not None else None,
        skus,
        ages,
        k,
        sent.exclude,
        at,
        context.device,
        sent.slot,
        sent.cart,
    )  # type: ignore[arg-type]


def _events(events: tuple[str | PurchaseEvent, ...]) -> tuple[tuple[str, ...], tuple[float, ...] | None]:
    """SKUs (upper-cased) and, when any event carries one, ages in days (NaN where an event has none)."""
    skus: list[str] = []
    ages: list[float] | None = None
    for event in events:
        if type(event) is str:
            skus.append(event.upper())
            if ages is not None:
                ages.append(math.nan)
            continue
        skus.append(event.item.upper())  # type: ignore[union-attr]
        age = event.age_days  # type: ignore[union-attr]
        if age is not None:
            if ages is None:
                ages = [math.nan] * (len(skus) - 1)
            ages.append(age)
        elif ages is not None:
            ages.append(math.nan)
    return tuple(skus), (tuple(ages) if ages is not None else None)


def _iso_time(value: str) -> float:
    try:
        return iso_seconds(value, "context.time")
    except SchemaError as exc:
        raise invalid(str(exc)) from None


def _expected(max_k: int) -> dict[str, str]:
    """What each field of the body takes, by its path (list indices as []): the 422's message."""
    string = f"expected a non-empty string of at most {MAX_ID_CHARS} characters"
    return {
        "shopper_id": string,
        "region": 'expected a two-letter market code such as "DE"',
        "recent_items": f"expected a list of at most {MAX_RECENT_ITEMS} SKUs or "
        '{"item": SKU, "age_days": number} objects',
        "recent_items[]": f"expected a SKU (a non-empty string of at most {MAX_ID_CHARS} characters) "
        "or an object with 'item'",
        "recent_items[].item": string,
        "recent_items[].age_days": f"expected a number from 0 to {MAX_AGE_DAYS} (days), or null",
        "k": f"expected an integer between 1 and {max_k}",
        "exclude": f"expected a list of at most {MAX_EXCLUDE} offer ids or SKUs",
        "exclude[]": string,
        "cart": f"expected a list of at most {MAX_CART} offer ids or SKUs in the cart now",
        "cart[]": f"expected an offer id or SKU: {ID_RULE}",
        "context": "expected an object with optional 'time' and 'device'",
        "context.time": f"expected an ISO 8601 date-time or epoch seconds from {MIN_EPOCH_S} to {MAX_EPOCH_S} "
        "(1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z)",
        "context.device": f"one of {', '.join(sorted(DEVICES))}",
        "slot": "1-32 characters of lower-case letters, digits, '-' and '_'",
    }


def _refusal(body: bytes, error: msgspec.DecodeError, max_k: int) -> RequestError:
    """The RequestError for a body msgspec refused (built only on failure: the valid path stays cheap)."""
    if not body.strip():
        return RequestError(400, "empty_body", "request body is empty; send a JSON object")
    if isinstance(error, msgspec.ValidationError):
        try:  # a body that is not JSON at all is a 400 even where its first token already had the wrong type
            msgspec.json.decode(body)
        except RecursionError:
            return RequestError(400, "invalid_json", "request body is not valid JSON: nested too deeply")
        except msgspec.DecodeError as exc:
            return RequestError(400, "invalid_json", f"request body is not valid JSON: {exc}")
        return invalid(_field_message(str(error), max_k))
    return RequestError(400, "invalid_json", f"request body is not valid JSON: {error}")


def _field_message(detail: str, max_k: int) -> str:
    """From msgspec's "Expected ... - at `$.recent_items[3].age_days`" to "recent_items[3].age_days: expected ..."."""
    detail, _, where = detail.partition(" - at `$")
    path = where.rstrip("`").lstrip(".")
    name = detail.split("`")[1] if detail.count("`") >= 2 else ""
    if detail.startswith("Object contains unknown field"):
        if not path:
            return f"unknown field(s): {name}; allowed: {', '.join(sorted(FIELDS))}"
        return f"{path}: unknown field(s) {name}"
    if detail.startswith("Object missing required field"):
        path = f"{path}.{name}"
    if not path:
        return "request body must be a JSON object"
    expected = _expected(max_k).get(_INDEX_RE.sub("[]", path))
    return f"{path}: {expected}" if expected is not None else f"{path}: {detail}"


_INDEX_RE = re.compile(r"\[\d+\]")


def parse_anonymous_query(query: dict[str, list[str]], max_k: int, default_k: int) -> RecommendationRequest:
    """The GET form: region-level offers for a shopper the edge knows nothing about, cacheable by a CDN."""
    unknown = set(query) - QUERY_FIELDS
    if unknown:
        raise invalid(
            f"unknown query parameter(s): {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(QUERY_FIELDS))}"
        )
    repeated = [name for name, values in query.items() if len(values) > 1]
    if repeated:
        raise invalid(f"query parameter(s) given more than once: {', '.join(sorted(repeated))}")
    one = {name: values[0] for name, values in query.items()}
    k = default_k
    if "k" in one:
        if not one["k"].isdigit() or not one["k"].isascii() or len(one["k"]) > 6:  # "²".isdigit() is True
            raise invalid(f"k: expected an integer between 1 and {max_k}")
        k = int(one["k"])
        if not 1 <= k <= max_k:
            raise invalid(f"k: {k} is out of range; expected 1 to {max_k}")
    region, device, slot = one.get("region"), one.get("device"), one.get("slot")
    if region is not None and not REGION_RE.match(region):
        raise invalid(f"region: {_expected(max_k)['region']}")
    if device is not None and device not in DEVICES:
        raise invalid(f"device: {_expected(max_k)['context.device']}")
    if slot is not None and not SLOT_RE.match(slot):
        raise invalid(f"slot: {_expected(max_k)['slot']}")
    return RecommendationRequest(
        shopper_id=None,
        region=region.upper() if region is not None else None,
        recent_items=(),
        recent_ages_days=None,
        k=k,
        exclude=(),
        at=None,
        device=device,
        slot=slot,
    )
