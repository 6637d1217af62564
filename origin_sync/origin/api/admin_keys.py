"""The admin API of signing keys: list the key set, announce a held key, activate it, revoke an old one; and the
task that adopts a key set another origin process published."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from origin_sync.origin.keyring import KeyRingError
from origin_sync.wire.signing import is_key_id

from .answers import KeyRotationAnswer, KeySetRead
from .bodies import read_json
from .errors import ApiError, json_response
from .openapi import documented
from .schemas import KeyAnnouncement, KeyId, checked
from .state import KEYRING, STORE

log = logging.getLogger("edgerec.origin")

KEY_SET_RECHECK_S = 1.0  # how soon a key set published by another origin process on the same database is adopted


@documented("The signing-key set, the active key and the keys held", answer=KeySetRead)
async def list_keys(request: web.Request) -> web.Response:
    """The published signing-key set, the active key id and the ids of the private keys this origin holds."""
    return json_response(request.app[KEYRING].describe())


async def _rotation_step(request: web.Request, key_id: object, step: str) -> web.Response:
    """Apply one rotation step to the stored key set and publish it through the change log (signed by the key that
    signs now, so every edge verifies it with a key it already trusts)."""
    if not isinstance(key_id, str) or not is_key_id(key_id):
        raise ApiError(422, "invalid_key_id", "key_id: 16 lowercase hex digits (GET /v1/admin/keys lists them)")
    request["audit_target"] = f"key_id={key_id}"
    ring = request.app[KEYRING]
    transition = {"announce": ring.announced, "activate": ring.activated, "revoke": ring.revoked}[step]
    try:
        version, key_set = await request.app[STORE].update_key_set(lambda stored: transition(stored, key_id))
    except KeyRingError as exc:
        raise ApiError(exc.status, exc.code, str(exc)) from None
    ring.adopt(key_set)
    log.info("signing key %s: %s at version %d; %s signs", key_id, step, version, ring.signer.key_id)
    return json_response({"key_set": key_set, "active": ring.signer.key_id, "data_version": version})


@documented(
    "Announce a held key as next (edges trust it before it signs)",
    body=KeyAnnouncement,
    answer=KeyRotationAnswer,
    errors=(404, 409),
)
async def announce_key(request: web.Request) -> web.Response:
    """Body {"key_id": ...}: publish a key the origin holds as `next`, so that edges trust it before it signs."""
    announcement = checked(await read_json(request), KeyAnnouncement, "invalid_key_id")
    return await _rotation_step(request, announcement.key_id, "announce")


@documented("Sign with an announced key", answer=KeyRotationAnswer, path={"key_id": KeyId}, errors=(409, 422))
async def activate_key(request: web.Request) -> web.Response:
    return await _rotation_step(request, request.match_info["key_id"], "activate")


@documented(
    "Revoke a key for good (not the active one)",
    answer=KeyRotationAnswer,
    path={"key_id": KeyId},
    errors=(409, 422),
)
async def revoke_key(request: web.Request) -> web.Response:
    return await _rotation_step(request, request.match_info["key_id"], "revoke")


async def follow_key_set(app: web.Application) -> None:
    """Other origin processes on the same database rotate keys too: adopt the stored key set within a second."""
    while True:
        await asyncio.sleep(KEY_SET_RECHECK_S)
        try:
            key_set = await app[STORE].key_set()
            if key_set != app[KEYRING].key_set:
                app[KEYRING].adopt(key_set)
                log.info("signing key set changed by another origin process; %s signs", app[KEYRING].signer.key_id)
        except Exception:  # noqa: BLE001 - keep signing with the keys in force; try again
            log.exception("could not adopt the stored signing key set; keeping the one in force")


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/v1/admin/keys", list_keys)
    router.add_post("/v1/admin/keys", announce_key)
    router.add_post("/v1/admin/keys/{key_id}/activate", activate_key)
    router.add_post("/v1/admin/keys/{key_id}/revoke", revoke_key)
