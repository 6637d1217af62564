"""The admin API of models: publish a bundle (checked as an edge would check it), activate one, list them."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from origin_sync.wire.protocol import ProtocolError, unpack

from .answers import Activated, ModelList, Published
from .bodies import MAX_UPLOAD_BYTES, read_body
from .errors import ApiError, json_response
from .openapi import MSGPACK_TYPE, documented
from .schemas import ModelUpload, PublishQuery, checked, query
from .state import STORE

log = logging.getLogger("edgerec.origin")


@documented(
    "Publish a model bundle (checked as an edge checks it: hash, golden cases)",
    body=ModelUpload,
    body_type=MSGPACK_TYPE,
    query=PublishQuery,
    answer=Published,
    status=201,
    errors=(409,),
)
async def publish_model(request: web.Request) -> web.Response:
    """Body: msgpack map {"manifest": {...}, "model": <model.onnx bytes>}. Query `state`: `published` (stored,
    served nowhere), `candidate` (an experiment's variant may name it) or `active` (served by every edge); without
    it the model is activated, as every publish did before model states."""
    state = query(request, PublishQuery).state
    try:
        payload = unpack(await read_body(request, MAX_UPLOAD_BYTES))
    except ProtocolError as exc:
        raise ApiError(400, "invalid_bundle", str(exc)) from None
    upload = checked(payload, ModelUpload, "invalid_bundle")
    manifest = upload.manifest
    if not isinstance(manifest.get("version"), str) or not manifest["version"]:
        raise ApiError(422, "invalid_bundle", "manifest.version must be a non-empty string")
    request["audit_target"] = f"model_version={manifest['version']}"
    # The origin refuses a bundle an edge would refuse, so a bad model never reaches the fleet.
    from models.runtime import BundleError, Ranker

    try:
        await asyncio.to_thread(Ranker.from_bytes, upload.model, manifest)
    except BundleError as exc:
        raise ApiError(422, "invalid_bundle", f"bundle rejected: {exc}") from None
    try:
        version, stored_state = await request.app[STORE].publish_model(manifest, upload.model, state=state)
    except ValueError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    log.info("model %s published as %s (data version %d)", manifest["version"], stored_state, version)
    return json_response({"model_version": manifest["version"], "state": stored_state, "data_version": version}, 201)


@documented("Activate a published model (or roll back to one)", answer=Activated)
async def activate_model(request: web.Request) -> web.Response:
    """Activate a published model (roll back). The model already active is a no-op: no change is appended, the data
    version stays, and the answer says so (`changed: false`), so no edge rebuilds for nothing."""
    model_version = request.match_info["model_version"]
    version, changed = await request.app[STORE].activate_model(model_version)
    answer: dict[str, Any] = {"model_version": model_version, "data_version": version, "changed": changed}
    if not changed:
        answer["message"] = f"model {model_version} is already active; nothing changed"
    return json_response(answer)


@documented("Every stored model and its state", answer=ModelList)
async def list_models(request: web.Request) -> web.Response:
    return json_response({"models": await request.app[STORE].models()})


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/v1/admin/models", list_models)
    router.add_post("/v1/admin/models", publish_model)
    router.add_post("/v1/admin/models/{model_version}/activate", activate_model)
