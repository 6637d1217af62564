"""HTTP handlers of the edge node: recommendations, health, readiness, metrics, OpenAPI."""

from __future__ import annotations

import logging
import os
import time

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from .openapi import OPENAPI
from .ranking import recommend
from .validation import RequestError, parse_recommendation_request

log = logging.getLogger("edgerec.edge")

JSON = "application/json"
NO_STORE = {"Cache-Control": "private, no-store"}
_OPENAPI_BODY = orjson.dumps(OPENAPI)


def json_response(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON, headers=headers)


def error_response(exc: RequestError) -> Response:
    return Response(exc.body(), status_code=exc.status, media_type=JSON, headers=NO_STORE)


async def read_body_limited(request: Request, limit: int) -> bytes:
    """Read the body, refusing anything over `limit` bytes before it is all in memory."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise RequestError(400, "invalid_header", "Content-Length is not a number")
        if int(declared) > limit:
            raise RequestError(413, "body_too_large", f"request body over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, "body_too_large", f"request body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def recommendations(request: Request) -> Response:
    started = time.perf_counter()
    app = request.app
    config = app.state.config
    metrics = app.state.metrics
    status = 200
    try:
        state = app.state.holder.current
        if state is None:
            raise RequestError(503, "not_ready", "this edge has no data or model yet; retry shortly")
        content_type = request.headers.get("content-type", JSON).split(";")[0].strip().lower()
        if content_type not in (JSON, "application/*+json", "text/plain", ""):
            raise RequestError(415, "unsupported_media_type", "send the request as application/json")
        body = await read_body_limited(request, config.max_body_bytes)
        parsed = parse_recommendation_request(body, config.max_k, config.default_k)
        answer = recommend(parsed, state)
        answer["request_id"] = os.urandom(8).hex()
        return Response(orjson.dumps(answer), media_type=JSON, headers=NO_STORE)
    except RequestError as exc:
        status = exc.status
        return error_response(exc)
    finally:
        metrics.requests.labels("recommendations", str(status)).inc()
        metrics.latency.labels("recommendations").observe(time.perf_counter() - started)


async def healthz(request: Request) -> Response:
    return json_response({"status": "alive"})


async def readyz(request: Request) -> Response:
    state = request.app.state.holder.current
    sync = request.app.state.syncer.status
    details = {
        "data_version": sync.version,
        "origin_version": sync.origin_version,
        "versions_behind": max(0, sync.origin_version - sync.version),
        "seconds_since_origin_contact": sync.staleness_s(),
        "sync_errors": sync.errors,
        "last_sync_error": sync.last_error,
        "model_version": state.model.version if state else None,
        "regions": {r: len(c) for r, c in state.catalogs.items()} if state else {},
    }
    ready = state is not None
    return json_response({"ready": ready, **details}, 200 if ready else 503, NO_STORE)


async def metrics_endpoint(request: Request) -> Response:
    body = request.app.state.metrics.render(request.app.state.syncer.status)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


async def openapi(request: Request) -> Response:
    return Response(_OPENAPI_BODY, media_type=JSON)


async def http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(RequestError(exc.status_code, code, str(exc.detail)))


async def unhandled_exception(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(RequestError(500, "internal", "internal error; see the edge's log"))
