"""The admin API the learning loop needs: the stored events as pages (training on the shop's own events), a model's
bundle (the served model the offline gate compares with), retiring a candidate, and the pipeline's decisions with
their evidence (each one an audited admin call as well)."""

from __future__ import annotations

import logging
import time
from typing import Any

import msgpack
import msgspec
from aiohttp import web

from origin_sync.origin.store import NotFound
from origin_sync.wire.protocol import MSGPACK_TYPE

from .bodies import read_json
from .errors import ApiError, json_response
from .openapi import documented
from .schemas import checked, query
from .schemas_loop import Decision, DecisionsQuery, EventsQuery
from .state import SINK, STORE

log = logging.getLogger("edgerec.origin")

MAX_EVIDENCE_CHARS = 200_000


@documented(
    "A page of the stored events, with their offers' SKUs (training on the shop's own events)",
    query=EventsQuery,
    errors=(409,),
)
async def export_events(request: web.Request) -> web.Response:
    """A page of stored events in (ts, id) order after `after_ts` and `after_id` (both, or neither), with `skus`
    mapping the page's offers to their SKUs and `next`, the key of the next page (null after the last)."""
    page = query(request, EventsQuery)
    if (page.after_ts is None) != (page.after_id is None):
        raise ApiError(422, "invalid_query", "after_ts and after_id go together (the `next` of the page before)")
    after = (page.after_ts, page.after_id) if page.after_ts is not None and page.after_id is not None else None
    limit = page.limit
    try:
        events = await request.app[SINK].read_events(after, limit)
    except NotImplementedError as exc:
        raise ApiError(409, "no_queryable_sink", str(exc)) from None
    skus = await request.app[STORE].offer_skus(sorted({o for e in events for o in e["offer_ids"]}))
    following = {"after_ts": events[-1]["ts"], "after_id": events[-1]["id"]} if len(events) == limit else None
    return json_response({"events": events, "skus": skus, "next": following})


@documented("A stored model as the body a publish takes (msgpack manifest and model.onnx)", answer_type=MSGPACK_TYPE)
async def model_bundle(request: web.Request) -> web.Response:
    """A stored model as the body a publish takes: msgpack {"manifest": {...}, "model": <model.onnx bytes>}."""
    try:
        manifest, model = await request.app[STORE].model_bundle(request.match_info["model_version"])
    except NotFound as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    body = msgpack.packb({"manifest": manifest, "model": model}, use_bin_type=True)
    return web.Response(body=body, content_type="application/x-msgpack")


@documented("Retire a candidate or published model (the active one is refused: 409)", errors=(409,))
async def retire_model(request: web.Request) -> web.Response:
    """Retire a candidate (or published) model whose experiment is over. The active model is refused
    (409): only activating another replaces it, so there is never a moment without one, nor two."""
    version = request.match_info["model_version"]
    try:
        was = await request.app[STORE].retire_model(version)
    except NotFound as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    except ValueError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    return json_response({"model_version": version, "state": "retired", "was": was})


@documented("Record one decision of the learning pipeline with its evidence", body=Decision, status=201)
async def record_decision(request: web.Request) -> web.Response:
    """Body {"pipeline", "round", "step", "decision", "evidence": {...}}: one decision of the learning pipeline.
    The audit log's entry of this call names it (`target`), the evidence is kept beside it."""
    decision = checked(await read_json(request), Decision, "invalid_request")
    if len(str(decision.evidence)) > MAX_EVIDENCE_CHARS:
        raise ApiError(422, "invalid_request", f"evidence: an object of at most {MAX_EVIDENCE_CHARS} characters")
    entry: dict[str, Any] = {"ts": time.time(), **msgspec.structs.asdict(decision)}
    request["audit_target"] = (
        f"pipeline={entry['pipeline']},round={entry['round']},step={entry['step']},decision={entry['decision']}"
    )
    entry["id"] = await request.app[STORE].record_decision(entry)
    log.info("pipeline %s round %s: %s %s", entry["pipeline"], entry["round"], entry["step"], entry["decision"])
    return json_response(entry, 201)


@documented("The newest decisions of the learning pipeline, newest first", query=DecisionsQuery)
async def list_decisions(request: web.Request) -> web.Response:
    """The newest decisions (`limit`, default 100), newest first; `pipeline` narrows to one pipeline."""
    wanted = query(request, DecisionsQuery)
    return json_response({"decisions": await request.app[STORE].decisions(wanted.pipeline, wanted.limit)})


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/v1/admin/events", export_events)
    router.add_get("/v1/admin/models/{model_version}/bundle", model_bundle)
    router.add_post("/v1/admin/models/{model_version}/retire", retire_model)
    router.add_post("/v1/admin/pipeline/decisions", record_decision)
    router.add_get("/v1/admin/pipeline/decisions", list_decisions)
