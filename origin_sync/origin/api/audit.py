"""The audit trail of admin calls: a JSON line on `edgerec.audit` and a row of the store's audit_log each."""

from __future__ import annotations

import logging
import time

from aiohttp import web

from .state import METRICS, STORE

log = logging.getLogger("edgerec.origin")
audit_log = logging.getLogger("edgerec.audit")

MAX_AUDIT_PATH = 512


async def audit(request: web.Request, actor: str | None, status: int) -> None:
    """One admin call. Never a token: the actor is the credential's fingerprint, and the path and ids are the
    caller's own. A handler may name its target (`request["audit_target"]`); else the route's parameters do."""
    target = request.get("audit_target")
    if target is None and request.match_info:
        target = ",".join(f"{k}={v}" for k, v in request.match_info.items())
    entry = {
        "ts": time.time(),
        "actor": actor,
        "method": request.method,
        "path": request.path[:MAX_AUDIT_PATH],
        "target": target[:MAX_AUDIT_PATH] if target else None,
        "peer": request.remote,
        "status": status,
    }
    metrics = request.app[METRICS]
    metrics.admin_calls.labels(str(status)).inc()
    audit_log.info(
        "admin %s %s -> %d by %s from %s",
        entry["method"],
        entry["path"],
        status,
        actor or "nobody",
        entry["peer"],
        extra={"audit": entry},
    )
    try:
        await request.app[STORE].record_audit(entry)
    except Exception:  # noqa: BLE001 - the call is done; the log line above is the record, alert on the counter
        metrics.audit_failures.inc()
        log.exception("could not store the audit entry of %s %s", entry["method"], entry["path"])
