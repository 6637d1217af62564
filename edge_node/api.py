"""HTTP handlers of the edge node: recommendations, health, readiness, metrics, OpenAPI."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from .openapi import build_openapi
from .responses import NO_STORE, error_response, json_response
from .validation import RequestError

log = logging.getLogger("edgerec.edge")


async def healthz(request: Request) -> Response:
    return json_response({"status": "alive"})


async def readyz(request: Request) -> Response:
    """Ready when the edge has a state to serve and, if a staleness limit is set, has heard from the origin
    within it; never once a stop was asked (503 `"draining": true`, while answers are still given)."""
    state = request.app.state.holder.current
    sync = request.app.state.syncer.status
    limit = request.app.state.config.max_staleness_s
    staleness = sync.staleness_s()
    too_stale = bool(limit) and (staleness is None or staleness > limit)
    details = {
        "data_version": state.data_version if state else None,
        "synced_version": sync.version,
        "origin_version": sync.origin_version,
        "versions_behind": sync.versions_behind(),
        "seconds_since_origin_contact": None if staleness is None else round(staleness, 3),
        "max_staleness_s": limit or None,
        "stale": too_stale,
        "loaded_from_disk": sync.loaded_from_disk,
        "persisted_version": sync.persisted_version,
        "sync_errors": sync.errors,
        "rejected_payloads": dict(sync.rejected),
        "persist_failures": sync.persist_failures,
        "origin": sync.origin,  # the one the syncer follows now (of several, with a list in EDGEREC_ORIGIN_URL)
        "origin_failovers": sync.failovers,
        # The first 16 hex digits of the signed state digest the served copy was proven against (digest.py).
        "state_digest": replica.state_digest.hex()[:16] if (replica := request.app.state.syncer.replica) else None,
        "last_sync_error": sync.last_error,
        "model_version": state.model.version if state else None,
        "regions": {r: len(c) for r, c in state.catalogs.items()} if state else {},
    }
    drain = request.app.state.drain
    if drain.draining:
        return json_response({**drain.readiness(), **details}, 503, NO_STORE)
    ready = state is not None and not too_stale
    return json_response({"ready": ready, "draining": False, **details}, 200 if ready else 503, NO_STORE)


async def metrics_endpoint(request: Request) -> Response:
    body = request.app.state.metrics.render(request.app.state.syncer.status)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


async def openapi(request: Request) -> Response:
    config = request.app.state.config
    state = request.app.state.holder.current
    context_length = state.context_length if state is not None else None
    return json_response(build_openapi(config.max_k, config.default_k, context_length, config.events))


async def http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(RequestError(exc.status_code, code, str(exc.detail)))


async def unhandled_exception(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(RequestError(500, "internal", "internal error; see the edge's log"))
