"""The origin's requests as msgspec Structs: the admin bodies and the query strings its handlers check (the offer,
experiment and event-batch bodies are the wire format's own), and `checked`/`query`, which check a value against one
in a single pass. `/openapi.json` is generated from these same types (openapi.py)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

import msgspec
from aiohttp import web

from origin_sync.origin.store import MODEL_ACTIVE
from origin_sync.wire.fields import MAX_FLOAT, explain
from origin_sync.wire.offers import Offer

from .errors import ApiError

MAX_OFFER_BATCH = 1000  # offers per POST /v1/admin/offers
MAX_AUDIT_LIMIT = 1000

KeyId = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{16}$", description="16 lowercase hex digits")]
Pseudonym = Annotated[
    str, msgspec.Meta(pattern=r"^[0-9a-f]{32}$", description="the shopper's 32-hex-digit keyed pseudonym")
]
Sha256 = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$", description="a blob's sha256, 64 lowercase hex digits")]
# A comma-separated list of two-letter market codes ("GB,DE"; case and spaces around the commas are forgiven).
RegionList = Annotated[
    str,
    msgspec.Meta(pattern=r"^ *[A-Za-z]{2} *(, *[A-Za-z]{2} *)*$", description="comma-separated market codes: GB,DE"),
]
PublishState = Literal["published", "candidate", "active"]  # store.PUBLISH_STATES

T = TypeVar("T")


class OfferBatch(msgspec.Struct, forbid_unknown_fields=True):
    """Up to 1000 whole offers, each with its id. Each is checked on its own as an Offer: one refused offer is
    reported in the answer and the others are stored."""

    offers: Annotated[list[Offer], msgspec.Meta(min_length=1, max_length=MAX_OFFER_BATCH)]


class _OfferBatchEnvelope(msgspec.Struct, forbid_unknown_fields=True):
    """What an OfferBatch is checked against as a whole, before each offer is (so that one cannot refuse all)."""

    offers: Annotated[list[Any], msgspec.Meta(min_length=1, max_length=MAX_OFFER_BATCH)]


class KeyAnnouncement(msgspec.Struct):
    """Announce a signing key the origin holds as `next`."""

    key_id: KeyId


class Erasure(msgspec.Struct):
    """Erase every stored event of one person (the caller computes the pseudonym with the deployment's key)."""

    shopper: Pseudonym


class ModelUpload(msgspec.Struct):
    """A model bundle, as msgpack: its manifest (manifest.json) and the bytes of model.onnx."""

    manifest: dict[str, Any]
    model: bytes


class PublishQuery(msgspec.Struct):
    state: Annotated[
        PublishState,
        msgspec.Meta(description="published (stored only), candidate (an experiment may name it) or active"),
    ] = MODEL_ACTIVE


class CompactQuery(msgspec.Struct):
    keep_versions: Annotated[int, msgspec.Meta(ge=0, description="override the configured retention")] | None = None


class AuditQuery(msgspec.Struct):
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_AUDIT_LIMIT, description="newest entries to answer")] = 100


class SnapshotQuery(msgspec.Struct):
    regions: RegionList


class DeltasQuery(msgspec.Struct):
    regions: RegionList
    since: Annotated[int, msgspec.Meta(ge=0, description="the edge's data version")]
    wait: Annotated[
        float, msgspec.Meta(ge=0, le=MAX_FLOAT, description="seconds to long-poll (capped at --max-wait)")
    ] = 0.0


_RULES = {
    "offers": f"a list of 1 to {MAX_OFFER_BATCH} offers",
    "key_id": "16 lowercase hex digits (GET /v1/admin/keys lists them)",
    "shopper": "the 32-hex-digit pseudonym (edgerec events erase computes it)",
    "manifest": "the bundle's manifest, a map",
    "model": "the bytes of model.onnx",
    "state": "one of published, candidate, active",
    "keep_versions": "a non-negative integer",
    "limit": "a positive integer, at most the endpoint's bound (/openapi.json states it)",
    "after_ts": "epoch seconds (the `next` of the page before)",
    "after_id": "the event id of the `next` of the page before",
    "pipeline": "a string of 1-64 characters",
    "round": "a string of 1-128 characters",
    "step": "a string of 1-32 characters",
    "decision": "a string of 1-32 characters",
    "evidence": "an object",
    "after": "the pseudonym the previous page ended at, or nothing",
    "events": "a list of 1 to 20000 [pseudonym, key, kind, item, ts, region] rows",
    "regions": "comma-separated two-letter market codes",
    "since": "an integer version >= 0",
    "wait": "a number of seconds >= 0",
}


def checked(value: object, schema: type[T], code: str, strict: bool = True) -> T:
    """`value` as a `schema`, or a 422 `code` naming the field and its rule."""
    try:
        return msgspec.convert(value, schema, strict=strict)
    except msgspec.ValidationError as exc:
        raise ApiError(422, code, explain(exc, _RULES)) from None


def query(request: web.Request, schema: type[T]) -> T:
    """The request's query string as a `schema` (numbers parsed from their text), or 422 `invalid_query`."""
    # A repeated parameter counts once, as given first; one the schema does not name is ignored; an empty one
    # (`after=` on a first page) counts as not given.
    given = {k: request.query[k] for k in request.query if request.query[k] != ""}
    return checked(given, schema, "invalid_query", strict=False)


def offer_batch(body: object) -> list[Any]:
    """The offers of an OfferBatch body, each still to be checked on its own."""
    return checked(body, _OfferBatchEnvelope, "invalid_request").offers
