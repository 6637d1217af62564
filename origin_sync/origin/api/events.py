"""Events at the origin: the edges' event batches taken in (idempotent, counted when unattributed), and the erasure
of one shopper's events (admin)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from origin_sync.origin.sinks import unattributed_feedback, unresolved_request_ids
from origin_sync.wire.events import EventBatch, InvalidEvents, decode_batch
from origin_sync.wire.health import batch_health

from .answers import Erased, EventsTaken
from .auth import require_regions
from .bodies import MAX_UPLOAD_BYTES, read_body, read_json
from .errors import ApiError, json_response
from .openapi import MSGPACK_TYPE, documented
from .schemas import Erasure, checked
from .state import METRICS, SINK, STORE

log = logging.getLogger("edgerec.origin")


@documented(
    "An edge's batch of events (idempotent by batch id)", body=EventBatch, body_type=MSGPACK_TYPE, answer=EventsTaken
)
async def ingest_events(request: web.Request) -> web.Response:
    """An edge's event batch (msgpack, see events.encode_batch). Idempotent: a batch id seen before is acknowledged
    again without storing anything; the edge deletes its segment only after this answer."""
    body = await read_body(request, MAX_UPLOAD_BYTES)
    try:
        batch_id, regions, events = await asyncio.to_thread(decode_batch, body)
        health = batch_health(body)
    except (InvalidEvents, ValueError) as exc:
        raise ApiError(422, "invalid_events", str(exc)) from None
    require_regions(request, regions, "send events of")
    # Scoped by the regions, so that one region's token can never shadow another region's batch.
    fresh = await request.app[SINK].write_batch(f"{','.join(sorted(regions))}/{batch_id}", events)
    if fresh:
        # After the events' transaction: a crash between them loses these counts (a retry finds the batch stored),
        # never counts them twice. They are a guardrail's signal, not accounting.
        await request.app[SINK].write_health(f"{','.join(sorted(regions))}/{batch_id}", health)
        await _count_unattributed(request.app, events)
    # Folded into the shoppers' summaries before the answer, retried batches too (the fold stores each event once):
    # a failure here answers 500, the edge sends the batch again, and no event is missing from a summary.
    await request.app[STORE].record_feedback(events)
    return json_response({"batch_id": batch_id, "events": len(events), "duplicate": not fresh})


async def _count_unattributed(app: web.Application, events: list[dict[str, Any]]) -> None:
    """Count the feedback of a stored batch whose request_id no impression carries, neither in the batch nor stored
    before it (one indexed look-up per batch, for the ids the batch itself does not explain). An edge spools an
    impression before its answer leaves, so feedback through the same worker always arrives after it; feedback that
    reached another worker or replica may arrive before its impression and is counted too. The report's
    `unattributed` is computed when it is read, so it is exact for the events stored by then."""
    unresolved = unresolved_request_ids(events)
    if not unresolved:
        return
    try:
        known = await app[SINK].stored_impressions(unresolved)
    except NotImplementedError:  # no SQL sink (NATS only): nothing to look impressions up in
        return
    except Exception:  # noqa: BLE001 - the batch is stored and acknowledged; only the count is missing
        log.exception("could not look up the impressions of an event batch; its unattributed feedback is not counted")
        return
    for kind, n in unattributed_feedback(events, known).items():
        app[METRICS].unattributed_events.labels(kind).inc(n)


@documented("Erase every stored event of one shopper (GDPR)", body=Erasure, answer=Erased, errors=(409,))
async def erase_events(request: web.Request) -> web.Response:
    """Body {"shopper": <pseudonym>}: delete every stored event and the profile of one person (GDPR erasure), and
    send every edge a signed `profile_erase` change. The caller computes the pseudonym from the shopper id with the
    deployment's key, so the id itself never reaches the origin."""
    shopper = checked(await read_json(request), Erasure, "invalid_request").shopper
    try:
        erased = await request.app[SINK].erase(shopper)
    except NotImplementedError as exc:
        raise ApiError(409, "no_queryable_sink", str(exc)) from None
    profile = await request.app[STORE].erase_profile(shopper)
    log.info(
        "erased %d events and the profile (%d events, %d shipped summaries redacted) of one shopper; erasure sent "
        "to every edge at version %d",
        erased,
        profile["profile_events_erased"],
        profile["changes_redacted"],
        profile["data_version"],
    )
    return json_response({"erased": erased, **profile})


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/v1/sync/events", ingest_events)
    router.add_post("/v1/admin/events/erase", erase_events)
