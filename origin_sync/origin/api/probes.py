"""The unauthenticated probes: `/healthz` (the process answers), `/readyz` (the store answers and a signing key is
loaded) and `/metrics` (Prometheus text)."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from .answers import Health, Ready
from .errors import json_response
from .openapi import TEXT, documented
from .state import DRAIN, KEYRING, METRICS, READY_STATE, STORE

log = logging.getLogger("edgerec.origin")

READY_TIMEOUT_S = 2.0  # /readyz answers 503 when the store takes longer than this to answer


@documented("Liveness: the process answers", answer=Health)
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@documented(
    "Readiness: the store answers within 2 s and a signing key is loaded, and no stop was asked (503 draining)",
    answer=Ready,
    answers={503: Ready},
)
async def readyz(request: web.Request) -> web.Response:
    """Ready (200) when the store answers a cheap query (its head) within READY_TIMEOUT_S and a signing key is
    loaded; else 503 `{"ready": false, "reason": ...}`. No auth, like /healthz, so the reason names the failure's
    kind only; the origin's log has its details (once per change to not ready, not on every probe). From SIGTERM on
    it answers 503 `{"ready": false, "draining": true, ...}` while the origin still serves (edgerec.core.shutdown)."""
    drain = request.app[DRAIN]
    if drain.draining:
        return json_response(drain.readiness(), 503)
    reason, detail = None, None
    try:
        signer = request.app[KEYRING].signer
    except Exception as exc:  # noqa: BLE001 - e.g. a key set whose active key this origin does not hold
        reason, detail = "no signing key loaded", f"{type(exc).__name__}: {exc}"
    else:
        try:
            head = await asyncio.wait_for(request.app[STORE].head(), READY_TIMEOUT_S)
        except asyncio.TimeoutError:
            reason = detail = f"store: no answer within {READY_TIMEOUT_S:g} s"
        except Exception as exc:  # noqa: BLE001 - whatever the database says, the origin cannot serve without it
            reason, detail = f"store: {type(exc).__name__}", f"{type(exc).__name__}: {exc}"
    state = request.app[READY_STATE]
    if reason != state.get("reason"):
        if reason is None:
            log.info("origin ready again")
        else:
            log.warning("origin not ready: %s", detail)
        state["reason"] = reason
    if reason is not None:
        return json_response({"ready": False, "reason": reason}, 503)
    return json_response({"ready": True, "data_version": head.version, "key_id": signer.key_id})


@documented("Prometheus metrics (text format)", answer_type=TEXT)
async def metrics_endpoint(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[METRICS].render(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
    )


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/healthz", healthz)
    router.add_get("/readyz", readyz)
    router.add_get("/metrics", metrics_endpoint)
