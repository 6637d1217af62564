"""The origin's HTTP service (aiohttp): admin API for offers and models, sync API (snapshot, long-poll deltas, blobs)."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from typing import Any, Awaitable, Callable

import orjson
from aiohttp import web

from .config import OriginConfig
from .protocol import (
    MSGPACK_TYPE,
    PROTOCOL_HEADER,
    PROTOCOL_VERSION,
    InvalidOffer,
    ProtocolError,
    pack,
    parse_regions,
    unpack,
    validate_offer,
)
from .store import ChangeLogStore, NotFound

log = logging.getLogger("edgerec.origin")

MAX_MODEL_BYTES = 256 * 1024 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STORE = web.AppKey("store", ChangeLogStore)
CONFIG = web.AppKey("config", OriginConfig)
CHANGED = web.AppKey("changed", asyncio.Condition)


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def error(status: int, code: str, message: str) -> web.Response:
    return json_response({"error": {"code": code, "message": message}}, status)


def msgpack_response(body: Any) -> web.Response:
    return web.Response(body=pack(body), content_type=MSGPACK_TYPE,
                        headers={PROTOCOL_HEADER: str(PROTOCOL_VERSION), "Cache-Control": "no-store"})


def _bearer_matches(request: web.Request, secrets: tuple[str, ...]) -> bool:
    """Constant-time check of the bearer token against every accepted value (two during a rotation)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    presented = token.encode()
    matches = [hmac.compare_digest(presented, s.encode()) for s in secrets]
    return scheme.lower() == "bearer" and any(matches)


@web.middleware
async def errors_and_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    config = request.app[CONFIG]
    path = request.path
    if path.startswith("/v1/admin/") and not _bearer_matches(request, config.admin_tokens):
        return error(401, "unauthorized", "admin calls need 'Authorization: Bearer <admin token>'")
    if path.startswith("/v1/sync/") and not _bearer_matches(request, config.sync_tokens):
        return error(401, "unauthorized", "sync calls need 'Authorization: Bearer <sync token>'")
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, path)
        return error(500, "internal", "internal error; see the origin's log")


async def _notify(app: web.Application) -> None:
    async with app[CHANGED]:
        app[CHANGED].notify_all()


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _BadRequest(f"body is not valid JSON: {exc}") from None


class _BadRequest(Exception):
    pass


# -- admin -------------------------------------------------------------------------------------

async def put_offer(request: web.Request) -> web.Response:
    try:
        offer = validate_offer(await _json_body(request), request.match_info["offer_id"])
    except (_BadRequest, InvalidOffer) as exc:
        return error(422 if isinstance(exc, InvalidOffer) else 400, "invalid_offer", str(exc))
    version = await asyncio.to_thread(request.app[STORE].upsert_offer, offer)
    await _notify(request.app)
    log.info("offer %s upserted at version %d", offer["id"], version)
    return json_response({"offer": offer, "data_version": version})


async def get_offer(request: web.Request) -> web.Response:
    try:
        return json_response({"offer": request.app[STORE].offer(request.match_info["offer_id"])})
    except NotFound as exc:
        return error(404, "not_found", str(exc))


async def delete_offer(request: web.Request) -> web.Response:
    try:
        version = await asyncio.to_thread(request.app[STORE].delete_offer, request.match_info["offer_id"])
    except NotFound as exc:
        return error(404, "not_found", str(exc))
    await _notify(request.app)
    return json_response({"deleted": request.match_info["offer_id"], "data_version": version})


async def publish_model(request: web.Request) -> web.Response:
    """Body: msgpack map {"manifest": {...}, "model": <model.onnx bytes>}."""
    try:
        payload = unpack(await request.read())
    except ProtocolError as exc:
        return error(400, "invalid_bundle", str(exc))
    if not isinstance(payload, dict) or not isinstance(payload.get("manifest"), dict) \
            or not isinstance(payload.get("model"), bytes):
        return error(422, "invalid_bundle", "expected a msgpack map with 'manifest' (map) and 'model' (bytes)")
    manifest = payload["manifest"]
    if not isinstance(manifest.get("version"), str) or not manifest["version"]:
        return error(422, "invalid_bundle", "manifest.version must be a non-empty string")
    # The origin refuses a bundle an edge would refuse, so a bad model never reaches the fleet.
    from models.runtime import BundleError, Ranker

    try:
        await asyncio.to_thread(Ranker.from_bytes, payload["model"], manifest)
    except BundleError as exc:
        return error(422, "invalid_bundle", f"bundle rejected: {exc}")
    try:
        version = await asyncio.to_thread(request.app[STORE].publish_model, manifest, payload["model"])
    except ValueError as exc:
        return error(409, "conflict", str(exc))
    await _notify(request.app)
    log.info("model %s published at version %d", manifest["version"], version)
    return json_response({"model_version": manifest["version"], "data_version": version}, 201)


async def activate_model(request: web.Request) -> web.Response:
    try:
        version = await asyncio.to_thread(request.app[STORE].activate_model, request.match_info["model_version"])
    except NotFound as exc:
        return error(404, "not_found", str(exc))
    await _notify(request.app)
    return json_response({"model_version": request.match_info["model_version"], "data_version": version})


async def list_models(request: web.Request) -> web.Response:
    return json_response({"models": request.app[STORE].models()})


async def status(request: web.Request) -> web.Response:
    return json_response({"data_version": request.app[STORE].head_version()})


# -- sync --------------------------------------------------------------------------------------

def _regions(request: web.Request) -> tuple[str, ...]:
    try:
        return parse_regions(request.query.get("regions", ""))
    except ValueError as exc:
        raise web.HTTPUnprocessableEntity(reason=f"regions: {exc}") from None


def _check_protocol(request: web.Request) -> None:
    sent = request.headers.get(PROTOCOL_HEADER)
    if sent is not None and sent != str(PROTOCOL_VERSION):
        raise web.HTTPConflict(reason=f"protocol {sent} not supported; origin speaks {PROTOCOL_VERSION}")


async def snapshot(request: web.Request) -> web.Response:
    _check_protocol(request)
    regions = _regions(request)
    snap = await asyncio.to_thread(request.app[STORE].snapshot, regions)
    return msgpack_response({"protocol": PROTOCOL_VERSION, "kind": "snapshot", "regions": list(regions), **snap})


async def deltas(request: web.Request) -> web.Response:
    """Long-poll: answer at once if anything changed after `since`, else wait up to `wait` seconds."""
    _check_protocol(request)
    regions = _regions(request)
    try:
        since = int(request.query.get("since", ""))
        wait = min(float(request.query.get("wait", "0")), request.app[CONFIG].max_wait_s)
    except ValueError:
        return error(422, "invalid_query", "since must be an integer version and wait a number of seconds")
    store = request.app[STORE]
    head = store.head_version()
    if since > head:
        return error(409, "ahead_of_origin", f"edge version {since} is ahead of the origin's {head}; take a snapshot")
    deadline = time.monotonic() + max(wait, 0.0)
    condition = request.app[CHANGED]
    while store.head_version() <= since and (remaining := deadline - time.monotonic()) > 0:
        async with condition:
            try:
                await asyncio.wait_for(condition.wait(), remaining)
            except asyncio.TimeoutError:
                break
    changes, reached = await asyncio.to_thread(store.changes_since, since, regions)
    return msgpack_response({"protocol": PROTOCOL_VERSION, "kind": "deltas", "regions": list(regions),
                             "from": since, "to": reached, "changes": changes})


async def blob(request: web.Request) -> web.StreamResponse:
    try:
        path = request.app[STORE].blobs.path(request.match_info["sha256"])
    except NotFound as exc:
        return error(404, "not_found", str(exc))
    if not path.exists():
        return error(404, "not_found", "no such blob")
    # Content-addressed, so immutable: any HTTP cache may keep it forever.
    return web.FileResponse(path, headers={"Cache-Control": "public, max-age=31536000, immutable",
                                           "Content-Type": "application/octet-stream"})


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


def build_app(config: OriginConfig, store: ChangeLogStore | None = None) -> web.Application:
    app = web.Application(middlewares=[errors_and_auth], client_max_size=MAX_MODEL_BYTES)
    app[CONFIG] = config
    app[STORE] = store or ChangeLogStore(config.db_path, config.blob_dir)

    async def on_startup(app: web.Application) -> None:
        app[CHANGED] = asyncio.Condition()

    async def on_cleanup(app: web.Application) -> None:
        app[STORE].close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/v1/admin/status", status)
    app.router.add_put("/v1/admin/offers/{offer_id}", put_offer)
    app.router.add_get("/v1/admin/offers/{offer_id}", get_offer)
    app.router.add_delete("/v1/admin/offers/{offer_id}", delete_offer)
    app.router.add_get("/v1/admin/models", list_models)
    app.router.add_post("/v1/admin/models", publish_model)
    app.router.add_post("/v1/admin/models/{model_version}/activate", activate_model)
    app.router.add_get("/v1/sync/snapshot", snapshot)
    app.router.add_get("/v1/sync/deltas", deltas)
    app.router.add_get("/v1/sync/blobs/{sha256}", blob)
    return app


def serve(config: OriginConfig) -> None:
    import uvloop

    log.info("origin listening on http://%s:%d (db %s)", config.host, config.port, config.db_path)
    web.run_app(build_app(config), host=config.host, port=config.port, print=None,
                access_log=None, loop=uvloop.new_event_loop(), handle_signals=True)
