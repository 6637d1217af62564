"""The sync API the edges call: a sealed snapshot of their regions, the long-polled deltas since a version, and
the signed content-addressed model blobs."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

from aiohttp import web

from origin_sync.origin.store import AheadOfOrigin, Compacted
from origin_sync.wire import digest
from origin_sync.wire.fields import parse_regions
from origin_sync.wire.protocol import (
    KEY_ID_HEADER,
    KIND_DELTAS,
    KIND_PROFILES,
    KIND_SNAPSHOT,
    MSGPACK_TYPE,
    PROTOCOL_HEADER,
    PROTOCOL_VERSION,
    SIGNATURE_HEADER,
)
from origin_sync.wire.signing import TRUSTED_KEYS_HEADER, Signer, blob_signing_bytes, is_key_id, seal

from .auth import require_regions
from .errors import ApiError
from .openapi import BINARY, documented
from .schemas import DeltasQuery, Sha256, SnapshotQuery, query
from .schemas_loop import ProfilesPageQuery
from .state import CHANGES, CONFIG, KEYRING, SNAPSHOTS, STORE
from .traces import SYNC_VERSIONS

# A long-poll re-reads the head at least this often, so that writes by another process on a database without
# notifications (SQLite) or a lost notification still wake it.
RECHECK_S = 1.0


def sealed_response(body: bytes, cacheable: bool = False) -> web.Response:
    return web.Response(
        body=body,
        content_type=MSGPACK_TYPE,
        headers={
            PROTOCOL_HEADER: str(PROTOCOL_VERSION),
            "Cache-Control": "private, max-age=60" if cacheable else "no-store",
        },
    )


def _trusted_key_ids(request: web.Request) -> frozenset[str] | None:
    """The key ids the edge says it trusts (a hint for choosing the signing key), or None when it says nothing."""
    raw = request.headers.get(TRUSTED_KEYS_HEADER)
    if raw is None:
        return None
    return frozenset(k for k in (p.strip() for p in raw.split(",")[:64]) if is_key_id(k))


def _signer(request: web.Request) -> Signer:
    return request.app[KEYRING].signer_for(_trusted_key_ids(request))


def _regions(request: web.Request, raw: str) -> tuple[str, ...]:
    try:
        regions = parse_regions(raw)
    except ValueError as exc:
        raise ApiError(422, "invalid_query", f"regions: {exc}") from None
    require_regions(request, regions, "sync")
    return regions


def _check_protocol(request: web.Request) -> None:
    sent = request.headers.get(PROTOCOL_HEADER)
    if sent is not None and sent != str(PROTOCOL_VERSION):
        raise ApiError(
            409,
            "protocol_mismatch",
            f"edge speaks protocol {sent}; this origin speaks {PROTOCOL_VERSION}: upgrade the edge",
        )


def _seal_snapshot(payload: dict[str, Any], regions: tuple[str, ...], signer: Signer) -> bytes:
    # The digest of exactly what the snapshot carries (O(state), once a version: sealed snapshots are cached).
    payload["state_digest"] = digest.state_digest(payload["offers"], payload["model"], payload["experiments"], regions)
    return seal(KIND_SNAPSHOT, payload, signer)


@documented("A signed snapshot of the regions' state (msgpack envelope)", query=SnapshotQuery, answer_type=MSGPACK_TYPE)
async def snapshot(request: web.Request) -> web.Response:
    _check_protocol(request)
    regions = _regions(request, query(request, SnapshotQuery).regions)
    store, cache = request.app[STORE], request.app[SNAPSHOTS]
    head = await store.head_version()
    signer = _signer(request)
    body = cache.get((regions, head, signer.key_id))
    if body is None:
        snap = await store.snapshot(regions)
        payload = {"regions": list(regions), "issued_at": time.time(), **snap}
        body = await asyncio.to_thread(_seal_snapshot, payload, regions, signer)
        cache.put((regions, snap["version"], signer.key_id), body)
    return sealed_response(body)


@documented(
    "The signed changes since a version, long-polled (msgpack envelope)",
    query=DeltasQuery,
    answer_type=MSGPACK_TYPE,
    errors=(409, 410),
)
async def deltas(request: web.Request) -> web.Response:
    """Long-poll: answer at once if anything changed after `since`, else wait up to `wait` seconds."""
    _check_protocol(request)
    asked = query(request, DeltasQuery)
    regions = _regions(request, asked.regions)
    since, wait = asked.since, min(asked.wait, request.app[CONFIG].max_wait_s)
    store, changes = request.app[STORE], request.app[CHANGES]
    deadline = time.monotonic() + max(wait, 0.0)
    while (
        not changes.closing and (await store.head_version()) <= since and (remaining := deadline - time.monotonic()) > 0
    ):
        await changes.wait(min(remaining, RECHECK_S))
    try:
        page = await store.changes_since(since, regions)
    except AheadOfOrigin as exc:
        raise ApiError(409, "ahead_of_origin", str(exc)) from None
    except Compacted as exc:
        raise ApiError(410, "compacted", str(exc)) from None
    payload = {
        "regions": list(regions),
        "from": page.since,
        "from_hash": page.from_hash,
        "to": page.to,
        "to_hash": page.to_hash,
        "head": page.head,
        "issued_at": time.time(),
        "changes": page.changes,
    }
    if page.state_digest is not None:
        payload["state_digest"] = page.state_digest
    request[SYNC_VERSIONS] = (page.since, page.to)  # for the traces (traces.py), when they are on
    return sealed_response(seal(KIND_DELTAS, payload, _signer(request)))


PROFILE_PAGE = 1000  # summaries a page of /v1/sync/profiles (at most about 28 MB, mostly far less)


@documented(
    "A signed page of the regions' profile summaries after a pseudonym (msgpack envelope)",
    query=ProfilesPageQuery,
    answer_type=MSGPACK_TYPE,
)
async def profiles(request: web.Request) -> web.Response:
    """A signed page of the profile summaries of the edge's regions after the pseudonym `after`: an edge loads
    its profile store from these after a snapshot (which carries none); the deltas it follows bring every later
    change, so a summary read here and changed since arrives again."""
    _check_protocol(request)
    page_query = query(request, ProfilesPageQuery)
    regions = _regions(request, page_query.regions)
    after = page_query.after or ""
    page = await request.app[STORE].profiles_page(regions, after, PROFILE_PAGE)
    payload = {"regions": list(regions), "after": after, "issued_at": time.time(), **page}
    return sealed_response(await asyncio.to_thread(seal, KIND_PROFILES, payload, _signer(request)))


_BLOB_SIGNATURES: dict[tuple[str, str], str] = {}  # (key id, sha256) -> signature: immutable, so kept


def _blob_signature(signer: Signer, sha256: str) -> str:
    key = (signer.key_id, sha256)
    if key not in _BLOB_SIGNATURES:
        _BLOB_SIGNATURES[key] = base64.b64encode(signer.sign(blob_signing_bytes(sha256))).decode()
    return _BLOB_SIGNATURES[key]


@documented(
    "A content-addressed model blob; X-Edgerec-Signature signs its sha256",
    answer_type=BINARY,
    path={"sha256": Sha256},
    headers={
        SIGNATURE_HEADER: {
            "description": "base64 Ed25519 signature of the blob's sha256",
            "schema": {"type": "string"},
        },
        KEY_ID_HEADER: {
            "description": "the id of the key that signed",
            "required": True,
            "schema": {"type": "string"},
        },
    },
)
async def blob(request: web.Request) -> web.StreamResponse:
    sha = request.match_info["sha256"]
    path = await request.app[STORE].blob_path(sha)
    signer = _signer(request)
    # Content-addressed, so immutable: any HTTP cache may keep it forever. The signature covers the address.
    return web.FileResponse(
        path,
        headers={
            "Cache-Control": "public, max-age=31536000, immutable",
            "Content-Type": "application/octet-stream",
            SIGNATURE_HEADER: _blob_signature(signer, sha),
            KEY_ID_HEADER: signer.key_id,
        },
    )


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/v1/sync/snapshot", snapshot)
    router.add_get("/v1/sync/deltas", deltas)
    router.add_get("/v1/sync/profiles", profiles)
    router.add_get("/v1/sync/blobs/{sha256}", blob)
