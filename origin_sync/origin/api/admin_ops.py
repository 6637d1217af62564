"""The admin API of operations: status, compaction now, the audit log; and the periodic housekeeping task
(compaction, event and audit retention)."""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

from origin_sync.wire.protocol import PROTOCOL_VERSION

from .answers import AuditLog, Compacted, Status
from .errors import json_response
from .openapi import documented
from .schemas import AuditQuery, CompactQuery, query
from .state import CONFIG, KEYRING, SINK, STORE

log = logging.getLogger("edgerec.origin")


@documented("The change log's head, compaction floor, protocol and signing key", answer=Status)
async def status(request: web.Request) -> web.Response:
    head = await request.app[STORE].head()
    return json_response(
        {
            "data_version": head.version,
            "head_hash": head.hash.hex(),
            "compaction_floor": head.floor,
            "protocol": PROTOCOL_VERSION,
            "key_id": request.app[KEYRING].signer.key_id,
        }
    )


@documented("Compact the change log now", query=CompactQuery, answer=Compacted)
async def compact(request: web.Request) -> web.Response:
    """Compact now. Query `keep_versions=N` overrides the configured retention (operators, tests)."""
    config = request.app[CONFIG]
    keep = query(request, CompactQuery).keep_versions
    if keep is not None:
        floor = await request.app[STORE].compact(keep_versions=keep)
    else:
        floor = await request.app[STORE].compact(config.retention_versions, config.retention_seconds)
    log.info("change log compacted: floor at version %d", floor)
    return json_response({"compaction_floor": floor})


@documented("The newest audit entries, newest first", query=AuditQuery, answer=AuditLog)
async def read_audit(request: web.Request) -> web.Response:
    """The newest audit entries (`limit`, default 100, at most 1000), newest first."""
    limit = query(request, AuditQuery).limit
    return json_response({"entries": await request.app[STORE].audit_log(limit)})


async def compact_periodically(app: web.Application) -> None:
    config = app[CONFIG]
    while True:
        await asyncio.sleep(config.compact_interval_s)
        try:
            if config.retention_versions is not None or config.retention_seconds is not None:
                await app[STORE].compact(config.retention_versions, config.retention_seconds)
            if config.event_retention_s is not None:
                await app[SINK].purge_before(time.time() - config.event_retention_s)
            if config.audit_retention_s is not None:
                await app[STORE].purge_audit(time.time() - config.audit_retention_s)
        except Exception:  # noqa: BLE001 - compaction is housekeeping: log it, try again later
            log.exception("compaction failed; will retry")


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/v1/admin/audit", read_audit)
    router.add_get("/v1/admin/status", status)
    router.add_post("/v1/admin/compact", compact)
