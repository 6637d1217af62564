"""Wire vocabulary shared by origin and edge: offers, changes, snapshots and deltas, msgpack-encoded."""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Any

import msgpack

PROTOCOL_VERSION = 1
MSGPACK_TYPE = "application/x-msgpack"
PROTOCOL_HEADER = "X-Edgerec-Protocol"

# Change operations in the log; an edge ignores nothing silently: an unknown op is a protocol error.
OP_OFFER_UPSERT = "offer_upsert"
OP_OFFER_DELETE = "offer_delete"
OP_MODEL_ACTIVATE = "model_activate"
OPS = frozenset({OP_OFFER_UPSERT, OP_OFFER_DELETE, OP_MODEL_ACTIVATE})

# A change that concerns every region (models) is tagged with this instead of region codes.
ALL_REGIONS = "*"

_REGION_RE = re.compile(r"^[A-Z]{2}$")
_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_MAX_TITLE = 300


class ProtocolError(ValueError):
    """A payload does not follow the sync protocol (wrong version, shape or field)."""


class InvalidOffer(ValueError):
    """An offer sent to the admin API is not valid; the message says which field and why."""


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise ProtocolError(f"undecodable msgpack payload: {exc}") from exc


def is_region_code(value: object) -> bool:
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


def _timestamp(value: object, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidOffer(f"{field}: expected an ISO 8601 date-time, epoch seconds or null")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise InvalidOffer(f"{field}: must be finite")
        return float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidOffer(f"{field}: {value!r} is not an ISO 8601 date-time") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        return parsed.timestamp()
    raise InvalidOffer(f"{field}: expected an ISO 8601 date-time, epoch seconds or null")


OFFER_FIELDS = ("id", "sku", "title", "price", "currency", "regions", "stock", "active_from", "active_to")


def validate_offer(payload: object, offer_id: str | None = None) -> dict[str, Any]:
    """Check an admin-supplied offer and return it in canonical form (the form stored and synced)."""
    if not isinstance(payload, dict):
        raise InvalidOffer("offer must be a JSON object")
    unknown = sorted(set(payload) - set(OFFER_FIELDS))
    if unknown:
        raise InvalidOffer(f"unknown field(s): {', '.join(unknown)}")
    oid = payload.get("id", offer_id)
    if offer_id is not None and oid != offer_id:
        raise InvalidOffer(f"id: body says {oid!r} but the path says {offer_id!r}")
    if not isinstance(oid, str) or not _ID_RE.match(oid):
        raise InvalidOffer("id: 1-128 characters of letters, digits and . _ : -")
    sku = payload.get("sku")
    if not isinstance(sku, str) or not _ID_RE.match(sku):
        raise InvalidOffer("sku: 1-128 characters of letters, digits and . _ : -")
    title = payload.get("title")
    if not isinstance(title, str) or not title.strip() or len(title) > _MAX_TITLE:
        raise InvalidOffer(f"title: a non-empty string of at most {_MAX_TITLE} characters")
    price = payload.get("price")
    if isinstance(price, bool) or not isinstance(price, (int, float)) or not math.isfinite(price) or price < 0:
        raise InvalidOffer("price: a finite number >= 0")
    currency = payload.get("currency")
    if not isinstance(currency, str) or not _CURRENCY_RE.match(currency):
        raise InvalidOffer("currency: a three-letter ISO 4217 code such as EUR")
    regions = payload.get("regions")
    if not isinstance(regions, list) or not regions or not all(is_region_code(r) for r in regions):
        raise InvalidOffer("regions: a non-empty list of two-letter market codes such as [\"DE\", \"FR\"]")
    stock = payload.get("stock", 0)
    if isinstance(stock, bool) or not isinstance(stock, int) or stock < 0:
        raise InvalidOffer("stock: an integer >= 0")
    active_from = _timestamp(payload.get("active_from"), "active_from")
    active_to = _timestamp(payload.get("active_to"), "active_to")
    if active_from is not None and active_to is not None and active_to <= active_from:
        raise InvalidOffer("active_to must be after active_from")
    return {
        "id": oid,
        "sku": sku.upper(),
        "title": title.strip(),
        "price": float(price),
        "currency": currency,
        "regions": sorted(set(regions)),
        "stock": stock,
        "active_from": active_from,
        "active_to": active_to,
    }


def offered_in(offer: dict[str, Any], regions: tuple[str, ...]) -> bool:
    return any(r in offer["regions"] for r in regions)


def check_envelope(payload: object, kind: str) -> dict[str, Any]:
    """Check the common envelope of a snapshot or delta batch before looking inside it."""
    if not isinstance(payload, dict):
        raise ProtocolError(f"{kind}: payload is not a map")
    if payload.get("protocol") != PROTOCOL_VERSION:
        raise ProtocolError(
            f"{kind}: protocol {payload.get('protocol')!r}, this edge speaks {PROTOCOL_VERSION}"
        )
    if payload.get("kind") != kind:
        raise ProtocolError(f"expected a {kind}, got {payload.get('kind')!r}")
    return payload
