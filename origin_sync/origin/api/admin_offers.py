"""The admin API of offers: put, merge-patch, get and delete one; upsert a batch."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from origin_sync.wire.offers import InvalidOffer, Offer, OfferPatch, patched_offer, validate_offer

from .answers import Deleted, OfferAnswer, OfferBatchAnswer, OfferRead
from .bodies import read_json
from .errors import ApiError, json_response
from .openapi import documented
from .schemas import MAX_OFFER_BATCH, OfferBatch, offer_batch
from .state import STORE

log = logging.getLogger("edgerec.origin")

MERGE_PATCH_TYPE = "application/merge-patch+json"


@documented("Create or replace an offer", body=Offer, answer=OfferAnswer)
async def put_offer(request: web.Request) -> web.Response:
    try:
        offer = validate_offer(await read_json(request), request.match_info["offer_id"])
    except InvalidOffer as exc:
        raise ApiError(422, "invalid_offer", str(exc)) from None
    version = await request.app[STORE].upsert_offer(offer)
    log.info("offer %s upserted at version %d", offer["id"], version)
    return json_response({"offer": offer, "data_version": version})


@documented(
    "Change some fields of an offer (JSON merge patch, RFC 7396)",
    body=OfferPatch,
    body_type=MERGE_PATCH_TYPE,
    answer=OfferAnswer,
    errors=(415,),
)
async def patch_offer(request: web.Request) -> web.Response:
    """RFC 7396 merge patch of a stored offer: the members sent replace the stored ones, a null resets one to its
    default (or leaves a required field missing), and the result is validated whole, in the write transaction."""
    if request.content_type != MERGE_PATCH_TYPE:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"PATCH takes a JSON merge patch (RFC 7396) with Content-Type: "
            f"{MERGE_PATCH_TYPE}; PUT replaces a whole offer",
        )
    patch = await read_json(request)
    if not isinstance(patch, dict):
        raise ApiError(422, "invalid_offer", "a merge patch of an offer is a JSON object of the fields to change")
    offer_id = request.match_info["offer_id"]
    try:
        version, offer = await request.app[STORE].update_offer(
            offer_id, lambda stored: patched_offer(stored, patch, offer_id)
        )
    except InvalidOffer as exc:
        raise ApiError(422, "invalid_offer", str(exc)) from None
    log.info("offer %s patched (data version %d)", offer_id, version)
    return json_response({"offer": offer, "data_version": version})


@documented(
    f"Create or replace up to {MAX_OFFER_BATCH} offers in one transaction", body=OfferBatch, answer=OfferBatchAnswer
)
async def put_offers(request: web.Request) -> web.Response:
    """Body {"offers": [...]}: up to MAX_OFFER_BATCH whole offers (each with its id) upserted in one transaction.
    Each is validated alone: a refused one is reported and the others are stored. Answers per offer, in order,
    "created", "changed", "unchanged" (equal to the stored one, not written) or "refused" with the reason."""
    offers = offer_batch(await read_json(request))
    request["audit_target"] = f"offers={len(offers)}"
    results: list[dict[str, Any]] = []
    valid: list[dict[str, Any]] = []
    for item in offers:
        oid = item.get("id") if isinstance(item, dict) and isinstance(item.get("id"), str) else None
        try:
            valid.append(validate_offer(item))
            results.append({"id": oid, "status": None})
        except InvalidOffer as exc:
            results.append({"id": oid, "status": "refused", "error": str(exc)})
    store = request.app[STORE]
    version, outcomes = await store.upsert_offers(valid) if valid else ((await store.head()).version, [])
    pending = iter(outcomes)
    for result in results:
        if result["status"] is None:
            result["status"] = next(pending)
    counts = {k: sum(1 for r in results if r["status"] == k) for k in ("created", "changed", "unchanged", "refused")}
    log.info("offer batch: %s (data version %d)", ", ".join(f"{n} {k}" for k, n in counts.items()), version)
    return json_response({"results": results, "counts": counts, "data_version": version})


@documented("Read an offer", answer=OfferRead)
async def get_offer(request: web.Request) -> web.Response:
    return json_response({"offer": await request.app[STORE].offer(request.match_info["offer_id"])})


@documented("Delete an offer", answer=Deleted)
async def delete_offer(request: web.Request) -> web.Response:
    version = await request.app[STORE].delete_offer(request.match_info["offer_id"])
    return json_response({"deleted": request.match_info["offer_id"], "data_version": version})


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/v1/admin/offers", put_offers)
    router.add_put("/v1/admin/offers/{offer_id}", put_offer)
    router.add_patch("/v1/admin/offers/{offer_id}", patch_offer)
    router.add_get("/v1/admin/offers/{offer_id}", get_offer)
    router.add_delete("/v1/admin/offers/{offer_id}", delete_offer)
