"""The offer schema: an offer and an offer patch as the admin API takes them (msgspec Structs), and the canonical
form in which an offer is stored, hashed, signed and synced."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from origin_sync.wire.fields import (
    CURRENCY_RULE,
    ID_RULE,
    MAX_BOOST,
    MAX_FLOAT,
    MAX_TITLE_CHARS,
    Boost,
    Currency,
    Id,
    RegionCode,
    SchemaError,
    Timestamp,
    epoch_seconds,
    explain,
)

Price = Annotated[float, msgspec.Meta(ge=0, le=MAX_FLOAT)]
Title = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TITLE_CHARS)]
Stock = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]  # what msgpack carries as an integer
Regions = Annotated[list[RegionCode], msgspec.Meta(min_length=1)]


class InvalidOffer(SchemaError):
    """An offer sent to the admin API is not valid; the message says which field and why."""


class Offer(msgspec.Struct, forbid_unknown_fields=True):
    """An offer as the admin API takes it (its id may come from the URL instead)."""

    sku: Id
    title: Title
    price: Price
    currency: Currency
    regions: Regions
    id: Id | None = None
    stock: Stock = 0
    active_from: Timestamp = None
    active_to: Timestamp = None
    group: Id | None = None  # product group, for the edge's diversity rule (at most N offers of one group)
    boost: Boost = 0.0  # campaign boost added to the model's score at the edge (0 = none)


class OfferPatch(msgspec.Struct, forbid_unknown_fields=True):
    """An RFC 7396 merge patch of an offer: the members it names replace the stored ones, a null removes one (its
    default applies, or a required field goes missing); the result is then checked whole as an Offer."""

    sku: Id | None | msgspec.UnsetType = msgspec.UNSET
    title: Title | None | msgspec.UnsetType = msgspec.UNSET
    price: Price | None | msgspec.UnsetType = msgspec.UNSET
    currency: Currency | None | msgspec.UnsetType = msgspec.UNSET
    regions: Regions | None | msgspec.UnsetType = msgspec.UNSET
    id: Id | None | msgspec.UnsetType = msgspec.UNSET
    stock: Stock | None | msgspec.UnsetType = msgspec.UNSET
    active_from: Timestamp | msgspec.UnsetType = msgspec.UNSET
    active_to: Timestamp | msgspec.UnsetType = msgspec.UNSET
    group: Id | None | msgspec.UnsetType = msgspec.UNSET
    boost: Boost | None | msgspec.UnsetType = msgspec.UNSET


OFFER_FIELDS = (
    "id",
    "sku",
    "title",
    "price",
    "currency",
    "regions",
    "stock",
    "active_from",
    "active_to",
    "group",
    "boost",
)
# The fields an offer must have (the id may come from the URL); the others have defaults.
REQUIRED_OFFER_FIELDS = ("id", "sku", "title", "price", "currency", "regions")
assert set(OFFER_FIELDS) == set(Offer.__struct_fields__) == set(OfferPatch.__struct_fields__)

_TIME_RULE = "expected an ISO 8601 date-time, epoch seconds or null"
# What each field must be, as every refusal says it ("price: a finite number >= 0").
OFFER_RULES = {
    "id": ID_RULE,
    "sku": ID_RULE,
    "title": f"a non-empty string of at most {MAX_TITLE_CHARS} characters",
    "price": "a finite number >= 0",
    "currency": CURRENCY_RULE,
    "regions": 'a non-empty list of two-letter market codes such as ["DE", "FR"]',
    "stock": "an integer >= 0",
    "active_from": _TIME_RULE,
    "active_to": _TIME_RULE,
    "group": f"{ID_RULE}, or null",
    "boost": f"a number between -{MAX_BOOST:g} and {MAX_BOOST:g}",
}


def _refusal(payload: dict[str, Any], offer_id: str | None, error: msgspec.ValidationError) -> InvalidOffer:
    """The message for a refused offer (built only on failure): every unknown field, else every missing one, else
    the first field that is wrong and why."""
    unknown = sorted(set(payload) - set(OFFER_FIELDS))
    if unknown:
        return InvalidOffer(f"unknown field(s): {', '.join(unknown)}")
    missing = [f for f in REQUIRED_OFFER_FIELDS if payload.get(f) is None and not (f == "id" and offer_id)]
    if missing:
        return InvalidOffer(
            f"missing required field(s): {', '.join(missing)} (an offer needs "
            f"{', '.join(REQUIRED_OFFER_FIELDS)}; stock, active_from, active_to, group and boost "
            f"have defaults)"
        )
    return InvalidOffer(explain(error, OFFER_RULES))


def validate_offer(payload: object, offer_id: str | None = None) -> dict[str, Any]:
    """Check an admin-supplied offer and return it in canonical form (the form stored and synced)."""
    if not isinstance(payload, dict):
        raise InvalidOffer("offer must be a JSON object")
    try:
        offer = msgspec.convert(payload, Offer)
    except msgspec.ValidationError as exc:
        raise _refusal(payload, offer_id, exc) from None
    oid = payload.get("id", offer_id)
    if offer_id is not None and oid != offer_id:
        raise InvalidOffer(f"id: body says {oid!r} but the path says {offer_id!r}")
    if oid is None:
        raise _refusal(payload, offer_id, msgspec.ValidationError("Object missing required field `id`"))
    title = offer.title.strip()
    if not title:
        raise InvalidOffer(f"title: {OFFER_RULES['title']}")
    active_from = epoch_seconds(offer.active_from, "active_from", InvalidOffer)
    active_to = epoch_seconds(offer.active_to, "active_to", InvalidOffer)
    if active_from is not None and active_to is not None and active_to <= active_from:
        raise InvalidOffer("active_to must be after active_from")
    return {
        "id": oid,
        "sku": offer.sku.upper(),
        "title": title,
        "price": offer.price,
        "currency": offer.currency,
        "regions": sorted(set(offer.regions)),
        "stock": offer.stock,
        "active_from": active_from,
        "active_to": active_to,
        "group": offer.group,
        "boost": offer.boost,
    }


def merge_patch(target: object, patch: object) -> object:
    """RFC 7396 JSON merge patch: an object patch merges member by member (null removes the member, an object
    merges recursively), anything else replaces the target."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def patched_offer(stored: dict[str, Any], patch: dict[str, Any], offer_id: str) -> dict[str, Any]:
    """The stored offer with a merge patch applied, checked whole; InvalidOffer names the field of the patch or of
    the result that is wrong."""
    try:
        msgspec.convert(patch, OfferPatch)
    except msgspec.ValidationError as exc:
        unknown = sorted(set(patch) - set(OFFER_FIELDS))
        raise InvalidOffer(
            f"unknown field(s): {', '.join(unknown)}" if unknown else explain(exc, OFFER_RULES)
        ) from None
    return validate_offer(merge_patch(stored, patch), offer_id)


def offered_in(offer: dict[str, Any], regions: tuple[str, ...]) -> bool:
    return any(r in offer["regions"] for r in regions)
